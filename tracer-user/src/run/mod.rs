//! The `run` loop: probe records in, spans out.
//!
//! One task owns all state and reads the ring buffer when the kernel signals it and every 50 ms
//! (10 ms while it is busy); a timer tick expires stale state, forgets processes gone for good
//! and releases spans that waited for device facts. SIGINT, SIGTERM and SIGQUIT end every open
//! call, flush the exporters and return; SIGHUP reads the settings again and applies what can
//! change while running ([`crate::settings::plan_reload`]). Every loss is logged with exact
//! counts within [`LOSS_REPORT_INTERVAL`], and the totals at stop. The stages' work per record
//! and per span is the [`pipeline`]; this module adds what needs the kernel, the network and the
//! clock.

pub mod ctl;
pub mod health;
mod heap;
pub mod instance;
mod lifecycle;
pub mod losses;
pub mod pipeline;
pub mod priority;
pub mod privileges;

use std::{
    borrow::Cow,
    io::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use log::{info, warn};
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind, sync::mpsc};
use tracer_export::{Destination, ExportHub};

use self::{
    ctl::{CtlAnswer, CtlRequest},
    instance::Instance,
    losses::{Loss, LossReport},
    pipeline::{DbQuery, OwnPorts, Pipeline, Routed, RoutedLog},
};
pub use crate::convert::spandata::{ClockOffset, monotonic_ns};
use crate::{
    configure::{
        Policy,
        cpptango::{self as tc, AdminChange, AdminCommand, DeviceSelector},
    },
    crosshost::{Incoming, Outgoing},
    devices::dbclient,
    discover::processes::Processes,
    peers::{PeerLink, PeerOptions},
    probe::{
        attach::Probes,
        record::{Peer, Record},
    },
    stats::StageStats,
};

/// How often the ring buffer is drained of records that did not wake the daemon, while records
/// come. After a drain that found none, the 100 ms tick drains it instead until records come
/// again: an idle daemon wakes 10 times a second rather than 30, and the first records of a
/// burst wait at most a tick (the ring buffer holds seconds of them). Each drain has a fixed cost
/// (a wake-up, a release, a hand-off to the exporters), so fewer drains make a call cheaper.
const RING_DRAIN_INTERVAL: Duration = Duration::from_millis(50);
/// A drain that found at least this many bytes (an eighth of the ring buffer) brings the next one
/// forward to [`RING_BUSY_DRAIN_INTERVAL`]: under a heavy burst the ring is emptied 5 times as
/// often, long before it could fill.
const RING_BUSY_BYTES: usize = 2 * 1024 * 1024;
const RING_BUSY_DRAIN_INTERVAL: Duration = Duration::from_millis(10);
/// What one drain of the ring buffer took out.
#[derive(Clone, Copy, Debug, Default)]
struct Drained {
    records: usize,
    bytes: usize,
}
/// How often the kernel's loss counters are read after a drain: reading them is a map lookup
/// per cause (system calls), too dear for every wake-up.
const LOST_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Most messages from other hosts' daemons handed to the pipeline between two releases.
const PEER_BURST: usize = 1024;
/// Longest time a loss waits before a log line reports it (the first one goes out at once).
const LOSS_REPORT_INTERVAL: Duration = Duration::from_secs(5);
/// How often the loss counters are read.
const LOSS_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long the facts of an exited process are kept for spans still in flight: longer than any
/// span waits for device facts (2 s) or for a lost reply (2 s).
const EXITED_KEEP: Duration = Duration::from_secs(5);

/// What SIGHUP reads the settings again with, and the settings running now.
#[derive(Clone, Debug)]
pub struct Reloader {
    pub loader: crate::settings::Loader,
    pub settings: crate::settings::Settings,
}

/// Options of `tango-tracer run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The daemon's own destinations of spans and of device logs.
    pub destinations: Vec<Destination>,
    pub log_destinations: Vec<Destination>,
    pub export: tracer_export::ExportConfig,
    pub capture_bytes: u32,
    /// Bytes copied of each device log message (longer ones are cut, counted).
    pub log_bytes: u32,
    pub ready_file: Option<PathBuf>,
    /// Trace only processes whose environment has this `NAME=value` (tests, scoped sessions).
    pub select_env: Option<(String, String)>,
    /// Trace only these pids (and processes selected by `select_env`).
    pub select_pids: Vec<u32>,
    /// Trace only processes of the network namespace with this inode (`--netns`); every process
    /// of the host when `None`.
    pub net_ns: Option<u32>,
    /// Also trace operations native telemetry leaves out (ping, state, info, …).
    pub extended_operations: bool,
    /// Trace processes whose own configuration says nothing (else only those that enable it).
    pub trace_by_default: bool,
    /// Attach the probes around user code inside requests (user-level spans).
    pub user_spans: bool,
    /// Where `tango-tracer ctl` reaches the daemon.
    pub control_socket: Option<PathBuf>,
    /// The nice value the daemon lowers its scheduling priority to (0: as started).
    pub nice: i32,
    /// Write every probe record as a JSON line here (for replay and benchmarks).
    pub record_to: Option<PathBuf>,
    pub proc_root: PathBuf,
    /// Linking calls across hosts with the daemons there (on when a key is given).
    pub peers: Option<PeerOptions>,
    /// Tail sampling of what goes to export (off when `None`).
    pub tail_sampling: Option<crate::sampling::TailSampling>,
    /// RED metrics and self-metrics: where they go (off when nowhere).
    pub metrics: crate::metrics::MetricsOptions,
}

struct Daemon {
    options: RunOptions,
    probes: Probes,
    processes: Processes,
    pipeline: Pipeline,
    hub: ExportHub,
    /// Export records of the last release (reused).
    routed: Vec<Routed>,
    routed_logs: Vec<RoutedLog>,
    recorder: Option<std::io::BufWriter<std::fs::File>>,
    own_pid: u32,
    imported_tx: mpsc::UnboundedSender<dbclient::Import>,
    /// Ring-buffer items that could not be decoded.
    undecodable: u64,
    /// Probe records lost so far, as last seen: when it grows, the pipeline stops trusting what
    /// was in progress.
    records_lost_seen: u64,
    /// When the kernel's loss counters were last read.
    lost_checked: Instant,
    loss_report: LossReport,
    last_loss_check: Instant,
    /// The link to other hosts' daemons, when cross-host linking is on.
    peers: Option<PeerLink>,
    /// Messages for other hosts' daemons from the last release (reused).
    outgoing: Vec<Outgoing>,
    /// Where metrics snapshots go, when the metrics are on.
    metrics: Option<crate::metrics::serve::Publisher>,
    /// The settings and how to read them again (none: SIGHUP changes nothing).
    reloader: Option<Reloader>,
    /// Health for the service manager, `ctl health` and `GET /healthz`.
    health: health::Health,
    /// Freed heap handed back to the kernel now and then.
    heap: heap::HeapTrim,
}

/// Runs until SIGINT, SIGTERM or SIGQUIT; on SIGHUP reloads what `reloader` allows. The caller
/// has checked the privileges ([`privileges::check`]) before it opened anything.
pub async fn run(options: RunOptions, reloader: Option<Reloader>) -> anyhow::Result<()> {
    heap::configure();
    match priority::lower_to(options.nice) {
        Ok(Some(nice)) => info!("running at nice {nice}: busy cores serve the traced processes first"),
        Ok(None) => {}
        Err(error) => warn!("keeping the priority the daemon was started with: {error:#}"),
    }
    // Held until the daemon returns: a second daemon on the same socket is refused meanwhile,
    // and the socket is removed when it drops.
    let _instance = match &options.control_socket {
        Some(socket) => Some(Instance::acquire(socket)?),
        None => None,
    };
    let (probes, ring) = Probes::load(options.capture_bytes, options.net_ns.unwrap_or(0), options.log_bytes)?;
    // From now on a SIGHUP waits for the loop (a reload) instead of ending the daemon. Not
    // before: `main` ignores it until here, as a signal caught while the kernel verifies a
    // program fails the load (EAGAIN).
    let mut sighup = tokio::signal::unix::signal(SignalKind::hangup())?;
    if let Some(net_ns) = options.net_ns {
        info!("tracing only processes of network namespace net:[{net_ns}]");
    }
    // SAFETY: the ring buffer owns its map fd and keeps it open for as long as the AsyncFd lives.
    let mut ring = unsafe { AsyncFd::register(ring) }.context("polling the ring buffer")?;
    let hub = ExportHub::start(options.export.clone());
    let recorder = match &options.record_to {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let peers = match &options.peers {
        Some(peer_options) => {
            let link = PeerLink::start(peer_options.clone())?;
            info!(
                "cross-host linking on: listening for other hosts' daemons at {}, this host's addresses {:?}",
                link.local_addr(),
                link.addrs()
            );
            Some(link)
        }
        None => None,
    };
    let (imported_tx, mut imported_rx) = mpsc::unbounded_channel();
    let policy = Policy {
        trace_by_default: options.trace_by_default,
        destinations: options.destinations.clone(),
        log_destinations: options.log_destinations.clone(),
        extended_operations: options.extended_operations,
    };
    let mut daemon = Daemon {
        pipeline: Pipeline::new(options.capture_bytes as usize, policy),
        processes: Processes::new(Some(options.proc_root.clone())),
        options,
        probes,
        hub,
        routed: Vec::new(),
        routed_logs: Vec::new(),
        recorder,
        own_pid: std::process::id(),
        imported_tx,
        undecodable: 0,
        records_lost_seen: 0,
        lost_checked: Instant::now(),
        loss_report: LossReport::new(LOSS_REPORT_INTERVAL),
        last_loss_check: Instant::now(),
        peers,
        outgoing: Vec::new(),
        metrics: None,
        reloader,
        health: health::Health::from_env(),
        heap: heap::HeapTrim::now(),
    };
    if let (Some(link), Some(peer_options)) = (&daemon.peers, &daemon.options.peers) {
        daemon.pipeline.link_hosts(peer_options.wait);
        daemon.pipeline.set_local_addresses(&link.addrs());
    }
    if let Some(rule) = &daemon.options.tail_sampling {
        info!("tail sampling on: {rule:?}");
        daemon.pipeline.tail_sampling(rule.clone());
    }
    let mut peer_rx = daemon.peers.as_mut().and_then(PeerLink::take_incoming);
    for destination in &daemon.options.destinations {
        info!("exporting spans to {destination:?}");
    }
    for destination in &daemon.options.log_destinations {
        info!("exporting device logs to {destination:?}");
    }
    if daemon.options.metrics.enabled() {
        daemon.pipeline.enable_metrics(daemon.options.metrics.max_series);
        daemon.metrics = Some(crate::metrics::serve::Publisher::start(&daemon.options.metrics)?);
    }
    daemon.scan_existing();
    daemon.pipeline.import_all(&daemon.processes);
    daemon.run_queries();
    // The control socket first: whoever waits for the ready file may call `ctl` at once.
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<ctl::Pending>(16);
    if let Some(path) = &daemon.options.control_socket {
        match ctl::serve(path, ctl_tx) {
            Ok(()) => info!("control socket {} (tango-tracer ctl)", path.display()),
            Err(e) => warn!("no control socket at {}: {e}", path.display()),
        }
    }
    // Before the ready file: whoever waits for it may stop the daemon at once, and must get a
    // flushed end rather than the signals' default action.
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sigquit = tokio::signal::unix::signal(SignalKind::quit())?;
    if let Some(path) = &daemon.options.ready_file {
        std::fs::write(path, format!("{}\n", daemon.own_pid))
            .with_context(|| format!("writing the ready file {}", path.display()))?;
    }
    // What start-up parsed (the kernel's BTF, the eBPF object, /proc) is freed: give it back.
    daemon.heap = heap::HeapTrim::now();
    info!("tango-tracer ready: {} target process(es)", daemon.processes.len());
    daemon.health.set_ready();
    daemon.observe_health();
    health::notify_ready(&daemon.health.view(Instant::now()).status);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut drain = tokio::time::interval(RING_DRAIN_INTERVAL);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The last drain found nothing: the tick drains until records come again.
    let mut ring_idle = false;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                daemon.drain_ring(guard.get_inner_mut());
                guard.clear_ready();
                daemon.release(false);
                if ring_idle {
                    ring_idle = false;
                    drain.reset();
                }
            }
            _ = drain.tick(), if !ring_idle => {
                // Data records do not wake the daemon (see the probes); collect them here.
                let drained = daemon.drain_ring(ring.get_mut());
                ring_idle = drained.records == 0;
                if drained.bytes >= RING_BUSY_BYTES {
                    drain.reset_after(RING_BUSY_DRAIN_INTERVAL);
                }
                daemon.release(false);
            }
            _ = tick.tick() => {
                if ring_idle && daemon.drain_ring(ring.get_mut()).records > 0 {
                    ring_idle = false;
                    drain.reset();
                }
                daemon.on_tick();
            }
            Some(import) = imported_rx.recv() => {
                daemon.pipeline.learn_import(import);
                daemon.release(false);
            }
            message = next_peer_message(&mut peer_rx) => {
                daemon.pipeline.peer_message(message);
                // A burst (a replay) is handed over whole and released once.
                if let Some(rx) = &mut peer_rx {
                    for _ in 0..PEER_BURST {
                        let Ok(message) = rx.try_recv() else { break };
                        daemon.pipeline.peer_message(message);
                    }
                }
                daemon.release(false);
            }
            Some(pending) = ctl_rx.recv() => {
                // What the probes saw before the command is routed under the configuration it
                // met: data records do not wake the daemon, so they are collected first.
                if daemon.drain_ring(ring.get_mut()).records > 0 && ring_idle {
                    ring_idle = false;
                    drain.reset();
                }
                daemon.release(false);
                let answer = daemon.on_ctl(pending.request);
                let _ = pending.reply.send(answer);
                daemon.release(false);
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sigquit.recv() => break,
            // Never an end: the settings are read again and what can change is applied.
            _ = sighup.recv() => {
                health::notify_reloading();
                daemon.reload();
                health::notify_reloaded();
                daemon.release(false);
            }
        }
    }
    health::notify_stopping();
    // Records already in the ring buffer belong to calls that happened before the signal.
    daemon.drain_ring(ring.get_mut());
    daemon.shutdown().await;
    Ok(())
}

/// Bytes of a ring record requested up front: a call's request or reply and the record header.
const PREFETCHED_BYTES: usize = 512;

/// Requests the first cache lines of a ring record at once. The probes wrote them on another
/// CPU: parsing would otherwise wait for each line in turn as it reaches it.
#[inline]
fn prefetch_record(record: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        let len = record.len().min(PREFETCHED_BYTES);
        // One address in each line after the first (touched by the ring's own header read),
        // the last byte's line included.
        for offset in (64..len).step_by(64).chain(len.checked_sub(1)) {
            if let Some(byte) = record.get(offset) {
                // SAFETY: a prefetch is a hint about an address inside `record`: it changes
                // nothing the program reads and cannot fault.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        std::ptr::from_ref(byte).cast(),
                    );
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = record;
}

impl Daemon {
    /// SIGHUP: reads the configuration file again (the environment and the command line still on
    /// top), applies what can change while running and logs one line per changed setting. A
    /// file that cannot be read or is invalid changes nothing.
    fn reload(&mut self) {
        let Some(reloader) = &self.reloader else {
            info!("SIGHUP: no settings to read again; the daemon keeps running");
            return;
        };
        let path = reloader.loader.file.path.display();
        let new = match reloader.loader.load() {
            Ok(new) => new,
            Err(e) => {
                warn!("SIGHUP: {e}; the running settings stay");
                return;
            }
        };
        let plan = crate::settings::plan_reload(&reloader.settings, &new);
        let file = match &new.file {
            Some(_) => format!("configuration file {path} read again"),
            None => format!("no configuration file at {path}"),
        };
        if plan.changes.is_empty() {
            info!("SIGHUP: {file}: no setting changed");
            return;
        }
        let env = |name: &str| std::env::var(name).ok();
        let options = match plan.settings.run_options(&env).and_then(|options| {
            crate::settings::check_stores(options.destinations.iter().chain(&options.log_destinations))
                .map(|()| options)
        }) {
            Ok(options) => options,
            Err(e) => {
                warn!("SIGHUP: {e:#}; the running settings stay");
                return;
            }
        };
        info!("SIGHUP: {file}: {} setting(s) changed", plan.changes.len());
        for change in &plan.changes {
            if change.applied {
                info!("SIGHUP: {change}");
            } else {
                warn!("SIGHUP: {change}");
            }
        }
        self.apply(options);
        if let Some(reloader) = &mut self.reloader {
            reloader.settings = plan.settings;
        }
    }

    /// Applies the settings a reload may change; the others in `new` equal the running ones.
    fn apply(&mut self, new: RunOptions) {
        let policy_changed = new.destinations != self.options.destinations
            || new.log_destinations != self.options.log_destinations
            || new.trace_by_default != self.options.trace_by_default
            || new.extended_operations != self.options.extended_operations;
        if policy_changed {
            // Spans routed before keep their destinations: what the hub holds for an old one is
            // still delivered there (or counted), nothing moves.
            self.pipeline.configuration_mut().set_policy(Policy {
                trace_by_default: new.trace_by_default,
                destinations: new.destinations.clone(),
                log_destinations: new.log_destinations.clone(),
                extended_operations: new.extended_operations,
            });
            for destination in &new.destinations {
                info!("exporting spans to {destination:?}");
            }
            for destination in &new.log_destinations {
                info!("exporting device logs to {destination:?}");
            }
            self.options.destinations = new.destinations;
            self.options.log_destinations = new.log_destinations;
            self.options.trace_by_default = new.trace_by_default;
            self.options.extended_operations = new.extended_operations;
        }
        if let Some(rule) = new.tail_sampling
            && self.options.tail_sampling.as_ref() != Some(&rule)
            && self.pipeline.set_tail_sampling_rule(rule.clone())
        {
            info!("tail sampling: {rule:?}");
            self.options.tail_sampling = Some(rule);
        }
        if new.metrics.interval != self.options.metrics.interval {
            if let Some(publisher) = &self.metrics {
                publisher.set_interval(new.metrics.interval);
            }
            self.options.metrics.interval = new.metrics.interval;
        }
        if new.metrics.destinations != self.options.metrics.destinations {
            match &mut self.metrics {
                Some(publisher) => {
                    publisher.set_destinations(&new.metrics.destinations);
                    self.options.metrics.destinations = new.metrics.destinations;
                }
                // Nothing aggregated them since the start: counting from now on would export
                // totals that are not.
                None => warn!(
                    "SIGHUP: metrics were off at start: they are pushed to {:?} only after a restart",
                    new.metrics.destinations
                ),
            }
        }
    }

    /// The one decode loop: every record in the ring buffer, in order. Returns how many there were and their size.
    fn drain_ring(&mut self, ring: &mut RingBuf<MapData>) -> Drained {
        let mut drained = Drained::default();
        while let Some(item) = ring.next() {
            drained.records += 1;
            drained.bytes += item.len();
            prefetch_record(&item);
            match Record::decode(&item) {
                Ok(record) => self.on_record(&record),
                Err(e) => {
                    // Counted and reported with the other losses.
                    self.undecodable += 1;
                    log::debug!("skipping a probe record: {e}");
                }
            }
        }
        if self.lost_checked.elapsed() >= LOST_CHECK_INTERVAL {
            self.lost_checked = Instant::now();
            let lost = self.probes.lost_records();
            if lost > self.records_lost_seen {
                self.records_lost_seen = lost;
                self.pipeline.records_lost(monotonic_ns());
            }
        }
        drained
    }

    fn on_record(&mut self, record: &Record) {
        let filled = self.with_connection_peer(record);
        let record = filled.as_ref().unwrap_or(record);
        if let Some(recorder) = &mut self.recorder
            && let Ok(line) = serde_json::to_string(record)
        {
            let _ = writeln!(recorder, "{line}");
        }
        if self.on_lifecycle(record) {
            return;
        }
        if let Record::Close { pid, fd, .. } = record {
            self.processes.connection_closed(*pid, *fd);
        }
        self.pipeline.push(record, &mut self.processes);
    }

    /// Bytes the probes read without their socket (the syscall probes), with the peer from
    /// `/proc` (read once per connection, at its first record: `/proc` tells it only while the
    /// connection exists), as the socket probes would have read it. `None` when the record has
    /// its peer or `/proc` cannot tell.
    fn with_connection_peer<'a>(&mut self, record: &'a Record<'_>) -> Option<Record<'a>> {
        let &Record::Data { pid, tid, fd, ts_ns, direction, total_len, ref bytes, peer: Peer::Unknown, tcp } =
            record
        else {
            return None;
        };
        let peer = self.processes.connection_peer(pid, fd);
        (peer != Peer::Unknown).then(|| Record::Data {
            pid,
            tid,
            fd,
            ts_ns,
            direction,
            total_len,
            bytes: Cow::Borrowed(bytes.as_ref()),
            peer,
            tcp,
        })
    }

    fn on_tick(&mut self) {
        self.pipeline.expire(monotonic_ns());
        if let Some(link) = &self.peers {
            // The peer link re-reads them now and then; the assembler follows.
            self.pipeline.set_local_addresses(&link.addrs());
        }
        self.release(false);
        for pid in self.processes.take_gone(EXITED_KEEP) {
            self.pipeline.forget_process(pid);
        }
        if self.metrics.as_ref().is_some_and(|m| m.due()) {
            self.publish_metrics();
        }
        let now = Instant::now();
        if self.health.check_due(now) {
            self.observe_health();
        }
        // From the main loop only: a loop that is stuck stops the watchdog.
        self.health.notify_due(now);
        self.heap.when_due();
        if self.last_loss_check.elapsed() >= LOSS_CHECK_INTERVAL {
            self.last_loss_check = Instant::now();
            let losses = self.losses();
            if let Some(line) = self.loss_report.check(&losses, self.last_loss_check) {
                warn!("{line}");
            }
        }
    }

    /// Everything lost so far, by stage and cause: probe records, state the stages could not
    /// keep, spans the exporters dropped.
    fn losses(&self) -> Vec<Loss> {
        let mut losses: Vec<Loss> = self
            .probes
            .losses()
            .by_cause()
            .map(|(cause, total)| Loss::new("probes", cause.replace('_', " "), total))
            .collect();
        losses.push(Loss::new("probes", "undecodable records", self.undecodable));
        for (stage, name, value) in self.pipeline.report(&self.processes).losses() {
            losses.push(Loss::new(stage, name.replace('_', " "), value));
        }
        for (stage, name, value) in self.peer_stats().losses() {
            losses.push(Loss::new(stage, name.replace('_', " "), value));
        }
        let export = self.hub.stats();
        for (signal, list) in [("", &export.destinations), ("logs ", &export.logs)] {
            for (destination, stats) in list {
                let stage = format!("export {signal}to {destination}");
                for (cause, count) in stats.dropped.by_cause() {
                    losses.push(Loss::new(stage.clone(), cause, count));
                }
            }
        }
        losses
    }

    /// Sends finished spans to their destinations and starts the database queries asked for.
    fn release(&mut self, force: bool) {
        self.pipeline.release(&self.processes, force, &mut self.routed);
        self.hub
            .submit_all(self.routed.drain(..).map(|Routed { record, destinations }| (record, destinations)));
        self.pipeline.release_logs(&self.processes, force, &mut self.routed_logs);
        for RoutedLog { record, destinations } in self.routed_logs.drain(..) {
            self.hub.submit_log(record, &destinations);
        }
        self.pipeline.take_outgoing(&mut self.outgoing);
        match &self.peers {
            Some(peers) => self.outgoing.drain(..).for_each(|message| peers.send(message)),
            None => self.outgoing.clear(),
        }
        self.run_queries();
    }

    /// The peer link's counters (none when cross-host linking is off).
    fn peer_stats(&self) -> StageStats {
        let mut stats = StageStats::default();
        if let Some(peers) = &self.peers {
            peers.report(&mut stats);
        }
        stats
    }

    fn run_queries(&mut self) {
        for query in self.pipeline.take_queries() {
            spawn_query(query, self.pipeline.own_ports(), self.imported_tx.clone());
        }
    }

    /// Answers `tango-tracer ctl`.
    fn on_ctl(&mut self, request: CtlRequest) -> CtlAnswer {
        let command = |pattern: &str, change| AdminCommand {
            command: "tango-tracer ctl".to_string(),
            targets: DeviceSelector::Pattern(pattern.to_string()),
            change,
        };
        match request {
            CtlRequest::List => CtlAnswer::Targets {
                targets: self.targets_view(),
                warnings: self.pipeline.configuration().warnings(),
            },
            CtlRequest::Stats => {
                CtlAnswer::Stats(ctl::StatsView::new(&self.stats(), self.losses(), &self.hub.stats()))
            }
            CtlRequest::Live => CtlAnswer::Live(Box::new(self.live_snapshot())),
            CtlRequest::Health => {
                self.observe_health();
                CtlAnswer::Health(self.health.view(Instant::now()))
            }
            CtlRequest::Enable { pattern, enable } => {
                let cmd = command(&pattern, AdminChange::Enable(enable));
                self.pipeline.configuration_mut().ctl_commands(vec![cmd]);
                CtlAnswer::Changed { devices: self.devices_matching(&pattern) }
            }
            CtlRequest::Endpoints { pattern, exporters, endpoints } => {
                match ctl_destinations(&exporters, &endpoints) {
                    Ok(list) => {
                        let cmd = command(&pattern, AdminChange::SetTracing(list));
                        self.pipeline.configuration_mut().ctl_commands(vec![cmd]);
                        CtlAnswer::Changed { devices: self.devices_matching(&pattern) }
                    }
                    Err(message) => CtlAnswer::Error { message },
                }
            }
            CtlRequest::Logging { pattern, enable } => {
                let cmd = command(&pattern, AdminChange::Logging(enable));
                self.pipeline.configuration_mut().ctl_commands(vec![cmd]);
                CtlAnswer::Changed { devices: self.devices_matching(&pattern) }
            }
            CtlRequest::LogEndpoints { pattern, exporters, endpoints } => {
                match ctl_destinations(&exporters, &endpoints) {
                    Ok(list) => {
                        let cmd = command(&pattern, AdminChange::SetLogging(list));
                        self.pipeline.configuration_mut().ctl_commands(vec![cmd]);
                        CtlAnswer::Changed { devices: self.devices_matching(&pattern) }
                    }
                    Err(message) => CtlAnswer::Error { message },
                }
            }
            CtlRequest::Reset { pattern } => {
                self.pipeline.configuration_mut().ctl_reset(&pattern);
                CtlAnswer::Changed { devices: self.devices_matching(&pattern) }
            }
        }
    }

    /// Reads the counters health is worked out from, and hands the verdict to `GET /healthz`.
    fn observe_health(&mut self) {
        let export = self.hub.stats();
        let failing = export
            .destinations
            .iter()
            .chain(export.logs.iter())
            .filter(|(_, s)| s.failing)
            .map(|(d, s)| format!("{d}: {}", s.last_error.as_deref().unwrap_or("failing")))
            .collect();
        let observation = health::Observation {
            traced_processes: self.processes.len(),
            spans_exported: export.total().spans_delivered,
            lost_total: self.losses().iter().map(|l| l.total).sum(),
            records_lost: self.probes.lost_records(),
            failing,
        };
        let now = Instant::now();
        self.health.observe(observation, now);
        if let Some(metrics) = &self.metrics {
            metrics.set_health(self.health.view(now));
        }
    }

    /// `top`'s answer: the live window and the daemon's health.
    fn live_snapshot(&mut self) -> crate::live::LiveSnapshot {
        let mut snapshot = self.pipeline.live_snapshot(&self.processes);
        let export = self.hub.stats();
        let total = export.total();
        snapshot.health = crate::live::HealthView {
            traced_processes: self.processes.len() as u64,
            records_lost: self.probes.lost_records(),
            lost_total: self.losses().iter().map(|l| l.total).sum(),
            spans_dropped: total.dropped.total(),
            spans_exported: total.spans_delivered,
            export_errors: export
                .destinations
                .iter()
                .filter(|(_, s)| s.failing)
                .map(|(d, s)| format!("{d}: {}", s.last_error.as_deref().unwrap_or("failing")))
                .collect(),
        };
        snapshot
    }

    /// Every stage's counters and table sizes, the probes' and the peer link's included.
    fn stats(&self) -> StageStats {
        let mut stats = self.pipeline.report(&self.processes);
        stats.push("probe", "lost_records", self.probes.lost_records());
        let (pending, streams) = self.probes.in_flight();
        stats.push("probe", "pending_syscall_entries", pending as u64);
        stats.push("probe", "partial_message_entries", streams as u64);
        stats.push("probe", "undecodable_records", self.undecodable);
        if let Some(peers) = &self.peers {
            peers.report(&mut stats);
        }
        stats
    }

    /// A snapshot of the RED metrics with the self-metrics of this moment, for the metrics
    /// endpoint and the OTLP push.
    fn publish_metrics(&mut self) {
        let (Some(publisher), Some(metrics)) = (&self.metrics, self.pipeline.metrics()) else {
            return;
        };
        let own = crate::metrics::own_metrics(
            &self.stats(),
            &self.losses(),
            &self.hub.stats(),
            self.processes.len(),
            publisher.counters(),
        );
        let snapshot = metrics.snapshot(own);
        if let Some(publisher) = self.metrics.as_mut() {
            publisher.publish(snapshot);
        }
    }

    fn devices_matching(&self, pattern: &str) -> Vec<String> {
        let selector = DeviceSelector::Pattern(pattern.to_string());
        let devices = self.pipeline.devices();
        let mut names: Vec<String> = self
            .processes
            .running()
            .iter()
            .flat_map(|p| devices.served_by(p.pid).filter_map(|k| devices.name(k)))
            .filter(|name| selector.matches(name))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn targets_view(&self) -> Vec<ctl::TargetView> {
        let devices = self.pipeline.devices();
        let config = self.pipeline.configuration();
        let mut views = Vec::new();
        for info in self.processes.running() {
            let libraries = format!(
                "omniORB {}, libtango {}",
                lifecycle::lib_text(info.libraries.omniorb.as_ref()),
                lifecycle::lib_text(info.libraries.tango.as_ref())
            );
            let mut served: Vec<(Option<String>, Option<String>)> = vec![(None, None)];
            for key in devices.served_by(info.pid) {
                served.push((devices.name(key), devices.class(key).map(str::to_string)));
            }
            served.sort();
            served.dedup();
            for (device, class) in served {
                let effective = config.effective(info.pid, device.as_deref());
                let spans = self.pipeline.released(info.pid, device.as_deref());
                let setting = |value: String, source: &tc::Source| ctl::SettingView {
                    value,
                    source: source.to_string(),
                };
                let destinations: Vec<String> = effective.tracing.0.iter().map(|d| d.to_string()).collect();
                let log_destinations: Vec<String> =
                    effective.logging.0.iter().map(|d| d.to_string()).collect();
                let logs = device.as_deref().map(|d| self.pipeline.released_logs(info.pid, d)).unwrap_or(0);
                views.push(ctl::TargetView {
                    pid: info.pid,
                    process: info.comm.clone(),
                    net_ns: info.net_ns,
                    device,
                    class,
                    libraries: libraries.clone(),
                    enable: setting(effective.enable.0.to_string(), &effective.enable.1),
                    types: setting(effective.types.0.names().join(","), &effective.types.1),
                    topics: setting(effective.topics.0.names().join(","), &effective.topics.1),
                    tracing: setting(destinations.join(", "), &effective.tracing.1),
                    spans,
                    logging: Some(setting(log_destinations.join(", "), &effective.logging.1)),
                    logs,
                });
            }
        }
        views
    }

    async fn shutdown(&mut self) {
        info!("stopping: ending open calls and flushing exporters");
        self.pipeline.flush_all(monotonic_ns());
        self.release(true);
        if let Some(peers) = &mut self.peers {
            peers.stop().await;
        }
        self.hub.shutdown().await;
        self.publish_metrics();
        if let Some(metrics) = self.metrics.as_mut() {
            metrics.finish(self.options.export.shutdown_timeout).await;
        }
        if let Some(recorder) = &mut self.recorder {
            let _ = recorder.flush();
        }
        let (messages, spans, unparsable) = self.pipeline.totals();
        let losses = self.losses();
        if let Some(line) = self.loss_report.since_last(&losses) {
            warn!("{line}");
        }
        let stats = self.hub.stats();
        let (export, logs) = (stats.total(), stats.logs_total());
        info!(
            "stopped: {messages} GIOP messages, {spans} spans, {unparsable} unparsable, {} probe records lost; \
             export: {} submitted, {} delivered, {} dropped, {} held; \
             logs export: {} submitted, {} delivered, {} dropped, {} held; lost: {}",
            self.probes.lost_records(),
            export.spans_submitted,
            export.spans_delivered,
            export.dropped.total(),
            export.spans_held,
            logs.spans_submitted,
            logs.spans_delivered,
            logs.dropped.total(),
            logs.spans_held,
            losses::totals(&losses),
        );
        let stats = self.pipeline.report(&self.processes);
        let peer_stats = self.peer_stats();
        let counters: Vec<String> = stats
            .iter()
            .chain(peer_stats.iter())
            .filter(|(_, name, value)| *value > 0 && !name.ends_with("_entries"))
            .map(|(stage, name, value)| format!("{stage}.{name}={value}"))
            .collect();
        info!("stage counters: {}", counters.join(" "));
    }
}

/// The next message from other hosts' daemons (never, when cross-host linking is off).
async fn next_peer_message(rx: &mut Option<mpsc::Receiver<Incoming>>) -> Incoming {
    match rx {
        Some(rx) => match rx.recv().await {
            Some(message) => message,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Destinations from `ctl`'s EXPORTER ENDPOINT pairs, checked as cppTango checks an admin
/// command's.
fn ctl_destinations(
    exporters: &[String],
    endpoints: &[String],
) -> Result<Vec<tracer_export::Destination>, String> {
    if exporters.len() != endpoints.len() {
        return Err("give as many endpoints as exporters".into());
    }
    exporters
        .iter()
        .zip(endpoints)
        .map(|(exporter, endpoint)| {
            tc::Exporter::parse(exporter)
                .and_then(|e| tc::destination(e, endpoint))
                .map_err(|e| format!("{exporter} {endpoint}: {e}"))
        })
        .collect()
}

/// Runs one database query in the background; its answer comes back to the loop.
fn spawn_query(query: DbQuery, own_ports: OwnPorts, tx: mpsc::UnboundedSender<dbclient::Import>) {
    let register = move |addr: Option<std::net::SocketAddr>| {
        if let (Some(addr), Ok(mut ports)) = (addr, own_ports.lock()) {
            ports.insert(addr.port());
        }
    };
    tokio::spawn(async move {
        match query {
            DbQuery::Import { tango_host } => match dbclient::import_exported(&tango_host, register).await {
                Ok(import) => {
                    info!("database {tango_host}: learnt {} device(s)", import.devices.len());
                    let _ = tx.send(import);
                }
                Err(e) => info!("database {tango_host} not queried: {e}"),
            },
            DbQuery::Properties { tango_host, device } => {
                match dbclient::device_properties(&tango_host, &device, register).await {
                    Ok(properties) => {
                        let import =
                            dbclient::Import { devices: Vec::new(), properties: vec![(device, properties)] };
                        let _ = tx.send(import);
                    }
                    Err(e) => info!("database {tango_host}: properties of {device} not read: {e}"),
                }
            }
        }
    });
}
