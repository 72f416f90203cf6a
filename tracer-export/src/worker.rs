//! One destination's worker: takes batches from its backlog, sends them, retries with backoff.
//!
//! - **Batching.** A batch goes as soon as [`ExportConfig::max_batch`] spans wait, and at every
//!   [`ExportConfig::flush_interval`] tick whatever waits goes, batch after batch. The console
//!   writes each span as it comes.
//! - **Retries.** A batch that fails with a retryable error is parked at the head of the
//!   backlog and tried again after a backoff that doubles from [`ExportConfig::initial_backoff`]
//!   up to [`ExportConfig::max_backoff`], with jitter. While the backend is down that retry is
//!   the only request, one per backoff period: it is the probe. New spans keep entering the
//!   backlog meanwhile (the submitting side never waits for the worker), and only the memory
//!   budget ever drops a span (see [`crate::backlog`]); a batch is never given up after some
//!   number of attempts. Errors that retrying cannot fix drop the batch, counted.
//! - **Recovery.** The first success after a failure drains the backlog at full speed: batches
//!   back to back until less than a full batch is left, not one per interval.
//! - **Shutdown.** Everything waiting is sent back to back until the deadline; a request still
//!   out then is cut off, and what is left is counted as not delivered at shutdown.
//!
//! The worker logs once when its destination starts failing (error) and once when spans are
//! actually delivered again (info); counts are in the statistics only.
//!
//! A worker carries one signal ([`Exportable`]): a destination of log records has a worker of
//! its own, which does all of the above for log records.

use std::{future::Future, hash::BuildHasher as _, marker::PhantomData, sync::Arc};

use log::{debug, error, info};
use tokio::{
    sync::{Notify, watch},
    time::{Instant, MissedTickBehavior},
};

use crate::{
    Signal,
    backlog::{Backlog, Outcome, Taken},
    console::ConsoleWriter,
    db::DbWriter,
    destination::Destination,
    hub::{ExportConfig, Shared},
    otlp::{GrpcSender, HttpSender, OtlpSender, Prepared},
    record::Exportable,
    stats::DropCounts,
    store::{StoreWriter, logs_path},
};

/// The shutdown's deadline, once shutdown has begun.
pub(crate) type Closing = watch::Receiver<Option<Instant>>;

/// Where a worker puts its batches.
enum Sink {
    Otlp(OtlpSender),
    Console(ConsoleWriter),
    Store(StoreWriter),
    /// The database store.
    Db(DbWriter),
    /// The destination could not be set up; every batch fails with this error's text.
    Broken(String),
}

impl Sink {
    /// Must run inside the runtime (the gRPC channel is created there).
    fn new(destination: &Destination, config: &ExportConfig, signal: Signal) -> Result<Sink, String> {
        let (timeout, gzip) = (config.request_timeout, config.gzip);
        let otlp = match destination {
            Destination::OtlpHttp { endpoint } => {
                HttpSender::new(endpoint, timeout, gzip, signal).map(OtlpSender::Http)
            }
            Destination::OtlpGrpc { endpoint } => {
                GrpcSender::new(endpoint, timeout, gzip, signal).map(OtlpSender::Grpc)
            }
            Destination::Console { stream } => return Ok(Sink::Console(ConsoleWriter::new(*stream))),
            Destination::Store { path } if !crate::db::is_json_lines(path) => {
                let writer =
                    DbWriter::new(path.clone(), config.store_session.clone(), config.store_max_bytes);
                return Ok(Sink::Db(writer));
            }
            Destination::Store { path } => {
                let path = match signal {
                    Signal::Traces => path.clone(),
                    Signal::Logs => logs_path(path),
                };
                return Ok(Sink::Store(StoreWriter::new(path)));
            }
        };
        otlp.map(Sink::Otlp).map_err(|err| err.to_string())
    }
}

/// Cause counters, as [`Outcome::Dropped`] and [`crate::backlog::Backlog::drop_all`] take them.
fn non_retryable(d: &mut DropCounts) -> &mut u64 {
    &mut d.non_retryable
}
fn write_failed(d: &mut DropCounts) -> &mut u64 {
    &mut d.write_failed
}
pub(crate) fn at_shutdown(d: &mut DropCounts) -> &mut u64 {
    &mut d.at_shutdown
}

pub(crate) struct Worker<R> {
    shared: Arc<Shared>,
    /// This destination's place in the hub.
    index: usize,
    destination: Destination,
    config: ExportConfig,
    wake: Arc<Notify>,
    closing: Closing,
    /// Consecutive failed attempts: the exponent of the next backoff.
    failures: u32,
    /// When the parked batch is tried again.
    retry_at: Option<Instant>,
    /// Send what waits, batch after batch, until less than a full batch is left.
    flush_all: bool,
    /// Whether the destination is failing, so that the change is logged once each way.
    failing: bool,
    jitter: Jitter,
    /// How the destination is named in messages: with its signal when that is logs.
    label: String,
    record: PhantomData<fn(R)>,
}

impl<R: Exportable> Worker<R> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        index: usize,
        destination: Destination,
        wake: Arc<Notify>,
        closing: Closing,
    ) -> Self {
        let config = shared.config.clone();
        let label = match R::SIGNAL {
            Signal::Traces => destination.to_string(),
            Signal::Logs => format!("{destination} (logs)"),
        };
        Worker {
            shared,
            index,
            destination,
            config,
            wake,
            closing,
            failures: 0,
            retry_at: None,
            flush_all: false,
            failing: false,
            jitter: Jitter::new(),
            label,
            record: PhantomData,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut sink = match Sink::new(&self.destination, &self.config, R::SIGNAL) {
            Ok(sink) => sink,
            Err(reason) => {
                error!("export to {} cannot start: {reason}", self.label);
                self.with_backlog(|b| b.note_error(reason.clone()));
                self.failing = true;
                Sink::Broken(reason)
            }
        };
        // The console shows each span as it finishes rather than once per interval.
        let immediate = matches!(sink, Sink::Console(_));
        let interval = self.config.flush_interval;
        let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let deadline = *self.closing.borrow();
            if let Some(deadline) = deadline {
                if Instant::now() >= deadline {
                    break;
                }
                self.flush_all = true;
            }
            if let Some(at) = self.retry_at {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline.map_or(at, |d| d.min(at))) => {}
                    changed = self.closing.changed(), if deadline.is_none() => {
                        if changed.is_err() {
                            break; // The hub is gone.
                        }
                        // Shutdown: one attempt now, whatever the backoff says.
                        self.retry_at = Some(Instant::now());
                        continue;
                    }
                }
                if Instant::now() < at {
                    continue; // The deadline passed first.
                }
                self.retry_at = None;
            } else {
                let waiting = self.with_backlog(|b| b.waiting()).unwrap_or(0);
                let ready =
                    waiting >= self.config.max_batch || (waiting > 0 && (self.flush_all || immediate));
                if !ready {
                    if deadline.is_some() {
                        break; // Shutdown, and everything went.
                    }
                    self.flush_all = false;
                    tokio::select! {
                        () = self.wake.notified() => {}
                        _ = ticker.tick() => {
                            self.flush_all = true;
                            self.sync_store(&mut sink).await;
                        }
                        changed = self.closing.changed() => {
                            if changed.is_err() {
                                break;
                            }
                        }
                    }
                    continue;
                }
            }
            self.send_next(&mut sink).await;
        }
        if self.closing.borrow().is_some_and(|deadline| Instant::now() < deadline) {
            self.sync_store(&mut sink).await;
        }
        self.with_backlog(|b| b.drop_all(at_shutdown));
        debug!("export to {}: worker done", self.label);
    }

    fn with_backlog<T>(&self, f: impl FnOnce(&mut Backlog<R, Prepared>) -> T) -> Option<T> {
        self.shared.backlog(self.index, f)
    }

    /// Sends the parked batch or the oldest waiting records, once.
    async fn send_next(&mut self, sink: &mut Sink) {
        let max_batch = self.config.max_batch;
        match self.with_backlog(|b| b.take(max_batch)).unwrap_or(Taken::Nothing) {
            Taken::Nothing => {}
            Taken::Retry(prepared) => self.attempt(sink, prepared).await,
            Taken::Fresh(batch) => {
                if batch.len() < max_batch {
                    // What is left now arrived after this batch was taken: it waits for a full
                    // batch or the next tick.
                    self.flush_all = false;
                }
                self.deliver(sink, batch).await;
            }
        }
    }

    async fn deliver(&mut self, sink: &mut Sink, batch: Vec<R>) {
        let written = match sink {
            Sink::Otlp(sender) => match sender.prepare(R::otlp_request(batch)) {
                Ok(prepared) => return self.attempt(sink, prepared).await,
                Err(err) => {
                    self.settle(Outcome::Dropped(non_retryable), Some(err.to_string()));
                    return self.failed(&err.to_string(), false);
                }
            },
            Sink::Broken(reason) => {
                let reason = reason.clone();
                self.settle(Outcome::Dropped(non_retryable), Some(reason.clone()));
                return self.failed(&reason, false);
            }
            Sink::Console(console) => before_deadline(&mut self.closing, console.write(batch))
                .await
                .map(|r| r.map_err(|e| e.to_string())),
            Sink::Db(db) => before_deadline(&mut self.closing, db.write(R::db_rows(batch)))
                .await
                .map(|r| r.map_err(|e| e.to_string())),
            Sink::Store(store) => {
                let sync = self.flush_all;
                before_deadline(&mut self.closing, store.write(batch, sync))
                    .await
                    .map(|r| r.map_err(|e| e.to_string()))
            }
        };
        match written {
            None => self.settle(Outcome::Dropped(at_shutdown), Some("cut off by shutdown".to_owned())),
            Some(Ok(())) => {
                self.settle(Outcome::Delivered { rejected: 0 }, None);
                self.delivered();
            }
            Some(Err(err)) => {
                self.settle(Outcome::Dropped(write_failed), Some(err.clone()));
                self.failed(&err, false);
            }
        }
    }

    /// One OTLP request for a prepared batch.
    async fn attempt(&mut self, sink: &mut Sink, prepared: Prepared) {
        let Sink::Otlp(sender) = sink else {
            // Only an OTLP sink prepares batches.
            return self.settle(Outcome::Dropped(non_retryable), Some("not an OTLP destination".to_owned()));
        };
        match before_deadline(&mut self.closing, sender.send(&prepared)).await {
            None => self.settle(Outcome::Dropped(at_shutdown), Some("cut off by shutdown".to_owned())),
            Some(Ok(accepted)) => {
                if accepted.rejected > 0 {
                    debug!(
                        "export to {}: backend rejected {} record(s): {}",
                        self.label, accepted.rejected, accepted.message
                    );
                }
                self.settle(Outcome::Delivered { rejected: accepted.rejected }, None);
                self.delivered();
            }
            Some(Err(err)) if err.is_retryable() => {
                let text = err.to_string();
                self.settle(Outcome::Retry(prepared), Some(text.clone()));
                let wait = self.config.backoff(self.failures, self.jitter.next());
                self.failures = self.failures.saturating_add(1);
                self.retry_at = Some(Instant::now() + wait);
                debug!("export to {}: attempt failed ({text}); next in {wait:?}", self.label);
                self.failed(&text, true);
            }
            Some(Err(err)) => {
                let text = err.to_string();
                self.settle(Outcome::Dropped(non_retryable), Some(text.clone()));
                self.failed(&text, false);
            }
        }
    }

    /// Counts the attempt and how its batch ended, under one lock.
    fn settle(&self, outcome: Outcome<Prepared>, error: Option<String>) {
        self.with_backlog(|b| {
            b.count_attempt(error);
            b.settle(outcome);
        });
    }

    /// Spans were delivered: the destination works (again).
    fn delivered(&mut self) {
        self.failures = 0;
        if self.failing {
            self.failing = false;
            // Whatever piled up meanwhile goes now, back to back.
            self.flush_all = true;
            info!("export to {}: working again", self.label);
        }
    }

    fn failed(&mut self, error: &str, retrying: bool) {
        if self.failing {
            return;
        }
        self.failing = true;
        if retrying {
            error!(
                "export to {}: {error}; retrying with backoff, keeping the newest {} within \
                 the memory budget",
                self.label,
                R::SIGNAL
            );
        } else {
            error!("export to {}: {error}; the batch is dropped", self.label);
        }
    }

    /// Puts what the store wrote on disk (at ticks and at the end).
    async fn sync_store(&mut self, sink: &mut Sink) {
        let Sink::Store(store) = sink else { return };
        if let Some(Err(err)) = before_deadline(&mut self.closing, store.sync()).await {
            let text = err.to_string();
            self.with_backlog(|b| b.note_error(text.clone()));
            self.failed(&text, false);
        }
    }
}

/// Runs `work` to its end unless the shutdown's deadline passes first (`None`, as when the hub
/// is gone); a shutdown that begins meanwhile sets the deadline.
async fn before_deadline<T>(closing: &mut Closing, work: impl Future<Output = T>) -> Option<T> {
    tokio::pin!(work);
    loop {
        let deadline = *closing.borrow();
        if let Some(deadline) = deadline {
            return tokio::time::timeout_at(deadline, work).await.ok();
        }
        tokio::select! {
            out = &mut work => return Some(out),
            changed = closing.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
        }
    }
}

/// A xorshift generator for backoff jitter: it needs spread between hubs, not quality.
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        // `RandomState` is seeded randomly per process and differs per instance.
        Jitter(std::hash::RandomState::new().hash_one(std::process::id()) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
