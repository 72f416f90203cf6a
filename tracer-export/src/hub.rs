//! The export hub: one worker per destination, bounded queues, batching, retries.
//!
//! [`ExportHub::submit`] is called from the assembly's hot path. It only clones the span per
//! destination and `try_send`s it into that destination's bounded queue: it never waits and
//! never fails loudly. A full queue (a slow or dead backend) drops the span and counts it; a
//! warning says so at most once per [`ExportConfig::warn_interval`].
//!
//! Each worker collects spans of all resources, and flushes every
//! [`ExportConfig::flush_interval`] or as soon as [`ExportConfig::max_batch`] spans wait. For
//! OTLP a flush is one request; failures are retried with exponential backoff, then the batch is
//! counted as failed and the worker goes on with the next one, so export resumes by itself when
//! the backend comes back.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use log::{debug, info, warn};
use tokio::{
    runtime::Handle,
    sync::mpsc::{self, error::TrySendError},
    task::JoinHandle,
    time::MissedTickBehavior,
};

use crate::{
    SpanRecord,
    console::ConsoleWriter,
    destination::Destination,
    otlp::{GrpcSender, HttpSender, OtlpSender, build_request, span_count},
    store::StoreWriter,
};

/// How the hub batches, queues and retries.
#[derive(Clone, Debug)]
pub struct ExportConfig {
    /// How often a worker sends what it has collected (default 1 s).
    pub flush_interval: Duration,
    /// A worker sends as soon as this many spans wait (default 512).
    pub max_batch: usize,
    /// Spans waiting per destination before new ones are dropped (default 65536).
    pub max_queue: usize,
    /// Time limit of one OTLP request, connection included (default 10 s).
    pub request_timeout: Duration,
    /// Attempts after the first before a batch is given up (default 5).
    pub max_retries: u32,
    /// Wait before the first retry; doubled for each further one (default 100 ms).
    pub initial_backoff: Duration,
    /// Longest wait between retries (default 5 s).
    pub max_backoff: Duration,
    /// Compress OTLP requests with gzip (default on).
    pub gzip: bool,
    /// At most one warning per destination and kind of trouble per interval (default 10 s).
    pub warn_interval: Duration,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            flush_interval: Duration::from_secs(1),
            max_batch: 512,
            max_queue: 65536,
            request_timeout: Duration::from_secs(10),
            max_retries: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            gzip: true,
            warn_interval: Duration::from_secs(10),
        }
    }
}

impl ExportConfig {
    /// The wait before retry number `attempt` (0 for the first retry).
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// What happened to the spans of one destination so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationStats {
    /// Spans the destination accepted.
    pub spans_exported: u64,
    /// Spans never handed to the destination: its queue was full, or the hub was shut down.
    pub spans_dropped: u64,
    /// Spans handed over but lost: retries exhausted, rejected by the backend, write failed.
    pub spans_failed: u64,
    /// Spans waiting in the queue or in the batch being built.
    pub spans_queued: u64,
    /// Requests (OTLP) or writes (console, store) attempted, retries included.
    pub requests_sent: u64,
    /// Attempts that failed.
    pub requests_failed: u64,
    /// The last error, as text.
    pub last_error: Option<String>,
}

/// Statistics of every destination used so far, in order of first use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// One entry per destination.
    pub destinations: Vec<(Destination, DestinationStats)>,
}

impl ExportStats {
    /// The statistics of one destination, if it was ever used.
    pub fn get(&self, destination: &Destination) -> Option<&DestinationStats> {
        self.destinations.iter().find(|(d, _)| d == destination).map(|(_, s)| s)
    }

    /// The sums over all destinations (`last_error` is the last listed one that is set).
    pub fn total(&self) -> DestinationStats {
        let mut total = DestinationStats::default();
        for (_, s) in &self.destinations {
            total.spans_exported += s.spans_exported;
            total.spans_dropped += s.spans_dropped;
            total.spans_failed += s.spans_failed;
            total.spans_queued += s.spans_queued;
            total.requests_sent += s.requests_sent;
            total.requests_failed += s.requests_failed;
            if s.last_error.is_some() {
                total.last_error.clone_from(&s.last_error);
            }
        }
        total
    }
}

/// A clonable handle to the export workers. Cheap to clone; all clones share the workers.
#[derive(Clone)]
pub struct ExportHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ExportHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportHub").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

struct Inner {
    config: ExportConfig,
    runtime: Handle,
    workers: RwLock<Workers>,
}

#[derive(Default)]
struct Workers {
    /// Set by shutdown: no new workers, every submit is a counted drop.
    closed: bool,
    running: HashMap<Destination, Worker>,
    /// Counters outlive their workers so that stats after shutdown stay complete.
    counters: Vec<(Destination, Arc<Counters>)>,
}

struct Worker {
    queue: mpsc::Sender<SpanRecord>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Counters {
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    queued: AtomicU64,
    requests: AtomicU64,
    requests_failed: AtomicU64,
    last_error: Mutex<Option<String>>,
    drop_warning: RateLimit,
    fail_warning: RateLimit,
}

impl Counters {
    fn snapshot(&self) -> DestinationStats {
        DestinationStats {
            spans_exported: self.exported.load(Ordering::Relaxed),
            spans_dropped: self.dropped.load(Ordering::Relaxed),
            spans_failed: self.failed.load(Ordering::Relaxed),
            spans_queued: self.queued.load(Ordering::Relaxed),
            requests_sent: self.requests.load(Ordering::Relaxed),
            requests_failed: self.requests_failed.load(Ordering::Relaxed),
            last_error: self.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        }
    }

    fn set_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
    }

    /// Counts spans dropped before reaching the worker and warns, rate-limited.
    fn drop_spans(&self, destination: &Destination, count: u64, why: &str, interval: Duration) {
        let total = self.dropped.fetch_add(count, Ordering::Relaxed) + count;
        if let Some(suppressed) = self.drop_warning.allow(interval) {
            warn!(
                "export to {destination}: dropped {} span(s) ({why}); {total} dropped so far",
                suppressed + count
            );
        } else {
            self.drop_warning.suppressed.fetch_add(count, Ordering::Relaxed);
        }
    }
}

/// Lets a warning through at most once per interval, counting what it held back.
#[derive(Default)]
struct RateLimit {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl RateLimit {
    /// `Some(held back since the last warning)` if a warning may be logged now.
    fn allow(&self, interval: Duration) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < interval) {
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
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
        config.max_queue = config.max_queue.max(1);
        if config.flush_interval.is_zero() {
            config.flush_interval = Duration::from_millis(1);
        }
        ExportHub { inner: Arc::new(Inner { config, runtime, workers: RwLock::new(Workers::default()) }) }
    }

    /// Queues `span` for each destination. Never blocks and never panics: a destination whose
    /// queue is full (or a hub already shut down) drops the span and counts it.
    pub fn submit(&self, span: SpanRecord, destinations: &[Destination]) {
        let Some((last, others)) = destinations.split_last() else {
            return;
        };
        for destination in others {
            self.submit_one(span.clone(), destination);
        }
        self.submit_one(span, last);
    }

    fn submit_one(&self, span: SpanRecord, destination: &Destination) {
        {
            let workers = self.inner.workers.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(worker) = workers.running.get(destination) {
                self.offer(worker, span, destination);
                return;
            }
        }
        let mut workers = self.inner.workers.write().unwrap_or_else(PoisonError::into_inner);
        if workers.closed {
            let counters = counters_for(&mut workers.counters, destination);
            counters.drop_spans(destination, 1, "export is shut down", self.inner.config.warn_interval);
            return;
        }
        if !workers.running.contains_key(destination) {
            let worker = self.spawn_worker(&mut workers.counters, destination);
            workers.running.insert(destination.clone(), worker);
        }
        if let Some(worker) = workers.running.get(destination) {
            self.offer(worker, span, destination);
        }
    }

    fn offer(&self, worker: &Worker, span: SpanRecord, destination: &Destination) {
        // Counted before sending so that the worker's decrement can never come first.
        worker.counters.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = worker.queue.try_send(span) {
            worker.counters.queued.fetch_sub(1, Ordering::Relaxed);
            let why = match err {
                TrySendError::Full(_) => "queue full",
                TrySendError::Closed(_) => "exporter stopped",
            };
            worker.counters.drop_spans(destination, 1, why, self.inner.config.warn_interval);
        }
    }

    fn spawn_worker(
        &self,
        all_counters: &mut Vec<(Destination, Arc<Counters>)>,
        destination: &Destination,
    ) -> Worker {
        let counters = counters_for(all_counters, destination);
        let (queue, receiver) = mpsc::channel(self.inner.config.max_queue);
        let task = self.inner.runtime.spawn(run_worker(
            destination.clone(),
            receiver,
            self.inner.config.clone(),
            counters.clone(),
        ));
        debug!("export to {destination}: worker started");
        Worker { queue, counters, task }
    }

    /// Sends everything queued, then stops the workers. Spans still unsent when `timeout`
    /// expires (a backend that stays down) are counted as dropped. Later submits are dropped
    /// and counted.
    pub async fn shutdown(&self, timeout: Duration) {
        let running = {
            let mut workers = self.inner.workers.write().unwrap_or_else(PoisonError::into_inner);
            workers.closed = true;
            std::mem::take(&mut workers.running)
        };
        let deadline = tokio::time::Instant::now() + timeout;
        for (destination, worker) in running {
            // Closing the queue lets the worker drain it, flush and return.
            drop(worker.queue);
            let mut task = worker.task;
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(())) => debug!("export to {destination}: flushed and stopped"),
                Ok(Err(join)) => warn!("export to {destination}: worker ended abnormally: {join}"),
                Err(_) => {
                    task.abort();
                    let _ = task.await;
                    let lost = worker.counters.queued.swap(0, Ordering::Relaxed);
                    worker.counters.dropped.fetch_add(lost, Ordering::Relaxed);
                    warn!(
                        "export to {destination}: shutdown timed out after {timeout:?}; \
                         {lost} span(s) not sent"
                    );
                }
            }
        }
    }

    /// A snapshot of every destination's counters.
    pub fn stats(&self) -> ExportStats {
        let workers = self.inner.workers.read().unwrap_or_else(PoisonError::into_inner);
        ExportStats {
            destinations: workers.counters.iter().map(|(d, c)| (d.clone(), c.snapshot())).collect(),
        }
    }
}

fn counters_for(all: &mut Vec<(Destination, Arc<Counters>)>, destination: &Destination) -> Arc<Counters> {
    if let Some((_, counters)) = all.iter().find(|(d, _)| d == destination) {
        return counters.clone();
    }
    let counters = Arc::new(Counters::default());
    all.push((destination.clone(), counters.clone()));
    counters
}

/// Where a worker puts its batches.
enum Sink {
    Otlp(OtlpSender),
    Console(ConsoleWriter),
    Store(StoreWriter),
    /// The destination could not be set up; every batch fails with this error's text.
    Broken(String),
}

impl Sink {
    fn new(destination: &Destination, config: &ExportConfig) -> Sink {
        let otlp = match destination {
            Destination::OtlpHttp { endpoint } => {
                HttpSender::new(endpoint, config.request_timeout, config.gzip).map(OtlpSender::Http)
            }
            Destination::OtlpGrpc { endpoint } => {
                GrpcSender::new(endpoint, config.request_timeout, config.gzip).map(OtlpSender::Grpc)
            }
            Destination::Console { stream } => return Sink::Console(ConsoleWriter::new(*stream)),
            Destination::Store { path } => return Sink::Store(StoreWriter::new(path.clone())),
        };
        match otlp {
            Ok(sender) => Sink::Otlp(sender),
            Err(err) => {
                warn!("export to {destination} cannot start: {err}");
                Sink::Broken(err.to_string())
            }
        }
    }
}

struct WorkerState {
    destination: Destination,
    config: ExportConfig,
    counters: Arc<Counters>,
    sink: Sink,
    /// Whether the last batch failed, so that recovery is logged once.
    failing: bool,
}

async fn run_worker(
    destination: Destination,
    mut queue: mpsc::Receiver<SpanRecord>,
    config: ExportConfig,
    counters: Arc<Counters>,
) {
    let sink = Sink::new(&destination, &config);
    // The console shows each span as it finishes rather than once per interval.
    let immediate = matches!(destination, Destination::Console { .. });
    let mut state = WorkerState { destination, config, counters, sink, failing: false };
    let max_batch = state.config.max_batch;
    let mut batch: Vec<SpanRecord> = Vec::with_capacity(max_batch.min(4096));
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + state.config.flush_interval,
        state.config.flush_interval,
    );
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let room = max_batch.saturating_sub(batch.len()).max(1);
        tokio::select! {
            received = queue.recv_many(&mut batch, room) => {
                if received == 0 {
                    break; // Queue closed and drained: shutdown.
                }
                if immediate || batch.len() >= max_batch {
                    state.flush(std::mem::take(&mut batch), false).await;
                }
            }
            _ = ticker.tick() => {
                state.flush(std::mem::take(&mut batch), true).await;
            }
        }
    }
    state.flush(batch, true).await;
    debug!("export to {}: worker done", state.destination);
}

impl WorkerState {
    /// Sends one batch (possibly empty: a tick still syncs the store).
    async fn flush(&mut self, batch: Vec<SpanRecord>, tick: bool) {
        let count = batch.len() as u64;
        let counters = &self.counters;
        let result = match &mut self.sink {
            Sink::Store(store) if batch.is_empty() => {
                if tick { store.sync().await.map_err(|e| e.to_string()) } else { Ok(()) }.map(|()| 0)
            }
            _ if batch.is_empty() => return,
            Sink::Otlp(sender) => send_otlp(sender, batch, &self.config, counters, &self.destination).await,
            Sink::Console(console) => count_write(counters, console.write(batch).await),
            Sink::Store(store) => count_write(counters, store.write(batch, tick).await),
            Sink::Broken(reason) => Err(reason.clone()),
        };
        counters.queued.fetch_sub(count, Ordering::Relaxed);
        match result {
            Ok(rejected) => {
                let rejected = rejected.min(count);
                counters.exported.fetch_add(count - rejected, Ordering::Relaxed);
                counters.failed.fetch_add(rejected, Ordering::Relaxed);
                if self.failing {
                    self.failing = false;
                    info!("export to {}: working again", self.destination);
                }
            }
            Err(err) => {
                counters.failed.fetch_add(count, Ordering::Relaxed);
                counters.set_error(err.clone());
                self.failing = true;
                match counters.fail_warning.allow(self.config.warn_interval) {
                    Some(suppressed) => {
                        let earlier = if suppressed > 0 {
                            format!(" ({suppressed} more lost since the last warning)")
                        } else {
                            String::new()
                        };
                        warn!("export to {}: {count} span(s) lost{earlier}: {err}", self.destination);
                    }
                    None => {
                        counters.fail_warning.suppressed.fetch_add(count, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// Counts one console or store write.
fn count_write<E: std::fmt::Display>(counters: &Counters, result: Result<(), E>) -> Result<u64, String> {
    counters.requests.fetch_add(1, Ordering::Relaxed);
    result.map(|()| 0).map_err(|err| {
        counters.requests_failed.fetch_add(1, Ordering::Relaxed);
        err.to_string()
    })
}

/// One OTLP request for the whole batch, retried with exponential backoff. Returns how many
/// spans the backend rejected.
async fn send_otlp(
    sender: &mut OtlpSender,
    batch: Vec<SpanRecord>,
    config: &ExportConfig,
    counters: &Counters,
    destination: &Destination,
) -> Result<u64, String> {
    let request = build_request(batch);
    let spans = span_count(&request);
    let mut encoded = None;
    let mut attempt = 0;
    loop {
        counters.requests.fetch_add(1, Ordering::Relaxed);
        match sender.send(&request, &mut encoded).await {
            Ok(accepted) => {
                if accepted.rejected > 0 {
                    warn!(
                        "export to {destination}: backend rejected {} of {spans} span(s): {}",
                        accepted.rejected, accepted.message
                    );
                }
                return Ok(accepted.rejected);
            }
            Err(err) => {
                counters.requests_failed.fetch_add(1, Ordering::Relaxed);
                let text = err.to_string();
                if !err.is_retryable() || attempt >= config.max_retries {
                    let attempts = attempt + 1;
                    return Err(format!("{text} (gave up after {attempts} attempt(s))"));
                }
                let wait = config.backoff(attempt);
                debug!(
                    "export to {destination}: attempt {} failed ({text}); retrying in {wait:?}",
                    attempt + 1
                );
                counters.set_error(text);
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
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
    use crate::{
        read_store,
        testing::{TempDir, device_resource, many_spans, reference_command_inout},
        tree::render_trees,
    };

    fn fast_config() -> ExportConfig {
        ExportConfig {
            flush_interval: Duration::from_millis(50),
            max_retries: 0,
            request_timeout: Duration::from_secs(2),
            ..ExportConfig::default()
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = ExportConfig::default();
        assert_eq!(config.backoff(0), Duration::from_millis(100));
        assert_eq!(config.backoff(3), Duration::from_millis(800));
        assert_eq!(config.backoff(10), Duration::from_secs(5));
        assert_eq!(config.backoff(u32::MAX), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn store_round_trip_through_the_hub() {
        let dir = TempDir::new("hub-store");
        let path = dir.path().join("a/b/spans.jsonl");
        let store = Destination::Store { path: path.clone() };
        let hub = ExportHub::start(fast_config());
        for span in reference_command_inout() {
            hub.submit(span, std::slice::from_ref(&store));
        }
        hub.submit(crate::testing::reference_command_inout_error(), std::slice::from_ref(&store));
        hub.shutdown(Duration::from_secs(5)).await;

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
        let stats = hub.stats();
        let s = stats.get(&store).unwrap();
        assert_eq!((s.spans_exported, s.spans_dropped, s.spans_failed, s.spans_queued), (3, 0, 0, 0));
        assert_eq!(s.last_error, None);
    }

    #[tokio::test]
    async fn queue_overflow_is_counted_not_blocking() {
        let dir = TempDir::new("hub-overflow");
        let store = Destination::Store { path: dir.path().join("spans.jsonl") };
        // A long interval and a big batch: nothing leaves the queue while we submit.
        let hub = ExportHub::start(ExportConfig {
            flush_interval: Duration::from_secs(60),
            max_batch: 100_000,
            max_queue: 10,
            ..ExportConfig::default()
        });
        let resource = device_resource("Demo", "test/demo/1", "Demo/Demo", 1);
        for span in many_spans(&resource, 25, 1) {
            hub.submit(span, std::slice::from_ref(&store));
        }
        let s = hub.stats().get(&store).cloned().unwrap();
        assert_eq!(s.spans_dropped, 15);
        assert_eq!(s.spans_queued, 10);
        hub.shutdown(Duration::from_secs(5)).await;
        let s = hub.stats().get(&store).cloned().unwrap();
        assert_eq!((s.spans_exported, s.spans_dropped, s.spans_queued), (10, 15, 0));
        assert_eq!(read_store(dir.path().join("spans.jsonl")).unwrap().len(), 10);

        // After shutdown, submits are counted drops, for known and new destinations alike.
        hub.submit(many_spans(&resource, 1, 99).remove(0), std::slice::from_ref(&store));
        let console = Destination::Console { stream: crate::ConsoleStream::Stderr };
        hub.submit(many_spans(&resource, 1, 100).remove(0), std::slice::from_ref(&console));
        let stats = hub.stats();
        assert_eq!(stats.get(&store).unwrap().spans_dropped, 16);
        assert_eq!(stats.get(&console).unwrap().spans_dropped, 1);
    }

    #[tokio::test]
    async fn shutdown_flushes_everything_in_many_batches() {
        let dir = TempDir::new("hub-flush");
        let path = dir.path().join("spans.jsonl");
        let store = Destination::Store { path: path.clone() };
        let hub = ExportHub::start(ExportConfig {
            flush_interval: Duration::from_secs(60),
            max_batch: 64,
            ..ExportConfig::default()
        });
        let a = device_resource("Demo", "test/demo/1", "Demo/Demo", 1);
        let b = device_resource("Demo", "test/demo/2", "Demo/Demo", 2);
        for (x, y) in many_spans(&a, 500, 1).into_iter().zip(many_spans(&b, 500, 1001)) {
            hub.submit(x, std::slice::from_ref(&store));
            hub.submit(y, std::slice::from_ref(&store));
        }
        hub.shutdown(Duration::from_secs(10)).await;
        let spans = read_store(&path).unwrap();
        assert_eq!(spans.len(), 1000);
        let mut seqs: Vec<i64> = spans.iter().filter_map(|s| s.attributes.get_i64("seq")).collect();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), 1000);
        let s = hub.stats().total();
        assert_eq!((s.spans_exported, s.spans_dropped, s.spans_failed), (1000, 0, 0));
    }

    #[tokio::test]
    async fn unwritable_store_counts_failures_and_keeps_going() {
        let dir = TempDir::new("hub-unwritable");
        // A directory where the file should be: every write fails.
        let path = dir.path().join("spans.jsonl");
        std::fs::create_dir_all(&path).unwrap();
        let store = Destination::Store { path: path.clone() };
        let hub = ExportHub::start(fast_config());
        for span in reference_command_inout() {
            hub.submit(span, std::slice::from_ref(&store));
        }
        hub.shutdown(Duration::from_secs(5)).await;
        let s = hub.stats().get(&store).cloned().unwrap();
        assert_eq!((s.spans_exported, s.spans_failed), (0, 2));
        assert!(s.last_error.unwrap().contains("cannot open span store"));
    }

    #[tokio::test]
    async fn unusable_endpoint_fails_batches_without_panicking() {
        let destination = Destination::OtlpGrpc { endpoint: "not a uri at all".into() };
        let hub = ExportHub::start(fast_config());
        for span in reference_command_inout() {
            hub.submit(span, std::slice::from_ref(&destination));
        }
        hub.shutdown(Duration::from_secs(5)).await;
        let s = hub.stats().get(&destination).cloned().unwrap();
        assert_eq!((s.spans_exported, s.spans_failed, s.spans_queued), (0, 2, 0));
        assert!(s.last_error.unwrap().contains("not a uri at all"));
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
        runtime.block_on(hub.shutdown(Duration::from_secs(5)));
        assert_eq!(read_store(dir.path().join("s.jsonl")).unwrap().len(), 4);
    }
}
