//! The per-record and per-span path, the same for the daemon and the replay benchmark: a
//! decoded record goes through assembly and events; finished spans wait for their device's
//! facts, are routed by the configuration and converted to export records.
//!
//! What needs the kernel or the network stays outside: the run loop adopts processes, attaches
//! uprobes and runs the database queries the pipeline asks for ([`Pipeline::take_queries`]).

use std::{
    borrow::Cow,
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hashbrown::{HashMap, HashSet};
use opentelemetry::trace::SpanKind;
use tracer_export::{Destination, LogRecord, SpanRecord};

use crate::{
    assemble::{
        AssembledSpan, Assembler, Crossing, Observation,
        naming::{DATABASE_KEY, OperationClass},
    },
    configure::{Configuration, LogRouting, Policy, Routing},
    convert::{
        logdata,
        resources::{self, ResourceKey, Resources},
        spandata::{self, ClockOffset},
    },
    crosshost::{Incoming, Linker, Outgoing},
    devices::{DeviceFacts, DeviceRegistry, dbclient},
    discover::{processes::Processes, procinfo::ProcessInfo},
    events::Events,
    live::{LiveSnapshot, LiveView},
    logs::{self, Logs, Waiting},
    metrics::SpanMetrics,
    probe::record::{Direction, Record},
    sampling::{self, Sampler, TailSampling},
    stats::StageStats,
    userspans::UserSpans,
};

/// How long a server span may wait for its device's class before it goes out without it.
const DEVICE_FACTS_WAIT: Duration = Duration::from_secs(2);
/// How long a span with an unknown opaque object key waits before the database is asked.
const IMPORT_AFTER: Duration = Duration::from_millis(300);
/// Most spans waiting for their device's facts; beyond, the oldest goes out without them.
const MAX_WAITING: usize = 65_536;

/// Local ports of the daemon's own database connections (their requests are not traced).
pub type OwnPorts = Arc<Mutex<HashSet<u16>>>;

/// A database query the pipeline needs and the run loop makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbQuery {
    /// Every exported device of the database at `tango_host` (names of opaque keys).
    Import { tango_host: String },
    /// The telemetry properties of `device` (it was exported, as cppTango reads them at start).
    Properties { tango_host: String, device: String },
}

/// An export record and where it goes.
pub struct Routed {
    pub record: SpanRecord,
    pub destinations: std::sync::Arc<[Destination]>,
}

/// A device log record and where it goes.
pub struct RoutedLog {
    pub record: LogRecord,
    pub destinations: std::sync::Arc<[Destination]>,
}

/// Counters of the pipeline's own steps.
#[derive(Clone, Copy, Debug, Default)]
struct PipelineStats {
    released: u64,
    /// Spans the configuration does not want (telemetry off, topic excluded).
    not_wanted: u64,
    /// Spans cppTango's own telemetry exports.
    native: u64,
    /// Spans released before their device's facts were known because too many waited.
    waiting_overflow: u64,
    /// Device log records released, not wanted by the configuration, exported by cppTango itself.
    logs_released: u64,
    logs_not_wanted: u64,
    logs_native: u64,
}

/// Assembly, events, devices, configuration and conversion, in that order.
pub struct Pipeline {
    assembler: Assembler,
    events: Events,
    logs: Logs,
    userspans: UserSpans,
    devices: DeviceRegistry,
    config: Configuration,
    resources: Resources,
    clock: ClockOffset,
    own_ports: OwnPorts,
    /// Spans finished since the last release.
    finished: Vec<AssembledSpan>,
    /// Spans waiting for their device's facts, with the time they started waiting.
    waiting: VecDeque<(Instant, AssembledSpan)>,
    /// Spans routed at a process's exit, before its configuration goes.
    ready: Vec<Routed>,
    queries: Vec<DbQuery>,
    stats: PipelineStats,
    /// Spans released per process and device (`None`: the process's own), for `ctl list`.
    released_by: HashMap<u32, ReleasedCounts>,
    /// Cross-host linking, when on.
    linker: Option<Linker>,
    /// Requests that crossed hosts, drained from the assembler (reused).
    crossings: Vec<Crossing>,
    /// Device logs released per process and logger, for `ctl list`.
    logs_released_by: HashMap<(u32, std::sync::Arc<str>), u64>,
    /// Every finished span over the last seconds, before the configuration's choice (`top`).
    live: LiveView,
    /// Tail sampling of what is routed for export, when on.
    sampler: Option<Sampler<Routed, RoutedLog>>,
    /// Spans and logs routed in this release, on their way through the sampler (reused).
    sampling_spans: Vec<Routed>,
    sampling_logs: Vec<RoutedLog>,
    /// RED metrics of every span routed, when on.
    metrics: Option<SpanMetrics>,
}

impl Pipeline {
    /// `capture_bytes` is the probes' capture length; `policy` the operator's configuration.
    pub fn new(capture_bytes: usize, policy: Policy) -> Self {
        Pipeline {
            assembler: Assembler::new(capture_bytes),
            events: Events::default(),
            logs: Logs::default(),
            userspans: UserSpans::default(),
            devices: DeviceRegistry::default(),
            config: Configuration::new(policy),
            resources: Resources::default(),
            clock: ClockOffset::now(),
            own_ports: Arc::default(),
            finished: Vec::new(),
            waiting: VecDeque::new(),
            ready: Vec::new(),
            queries: Vec::new(),
            stats: PipelineStats::default(),
            released_by: HashMap::new(),
            logs_released_by: HashMap::new(),
            linker: None,
            crossings: Vec::new(),
            live: LiveView::default(),
            sampler: None,
            sampling_spans: Vec::new(),
            sampling_logs: Vec::new(),
            metrics: None,
        }
    }

    /// Turns tail sampling on: whole traces routed for export are kept or dropped by `rule`.
    pub fn tail_sampling(&mut self, rule: TailSampling) {
        self.sampler = Some(Sampler::new(rule));
    }

    /// Changes the rule of tail sampling while it is on (SIGHUP); false when it is off.
    pub fn set_tail_sampling_rule(&mut self, rule: TailSampling) -> bool {
        match &mut self.sampler {
            Some(sampler) => {
                sampler.set_rule(rule);
                true
            }
            None => false,
        }
    }

    /// Turns the RED metrics on: every span routed from now on is counted, whatever the
    /// configuration does with it, in at most `max_series` series.
    pub fn enable_metrics(&mut self, max_series: usize) {
        self.metrics = Some(SpanMetrics::new(max_series));
    }

    /// The RED metrics, when on.
    pub fn metrics(&self) -> Option<&SpanMetrics> {
        self.metrics.as_ref()
    }

    /// Turns cross-host linking on: a server span of a request from another host waits at most
    /// `wait` for the daemon there.
    pub fn link_hosts(&mut self, wait: Duration) {
        self.linker = Some(Linker::new(wait));
    }

    /// This host's addresses (a TCP peer elsewhere is another host); called again when they
    /// change. Only used while cross-host linking is on.
    pub fn set_local_addresses(&mut self, addresses: &[std::net::Ipv4Addr]) {
        if self.linker.is_some() {
            self.assembler.set_local_addresses(addresses.iter().copied());
        }
    }

    /// A process becomes a target: follows it when `processes` has room (false when not), then
    /// learns its configuration sources and what its command line says. A process that had the
    /// pid until a moment ago (exec, pid reuse) leaves first: what it left is routed under its
    /// own configuration, then every stage forgets it.
    pub fn start_process(&mut self, info: ProcessInfo, processes: &mut Processes) -> bool {
        let pid = info.pid;
        if processes.is_traced(pid) {
            self.route_process(pid, processes);
            self.forget_process(pid);
        }
        if !processes.insert(info) {
            return false;
        }
        if let Some(info) = processes.info(pid) {
            if let Some(facts) = database_server_facts(info) {
                self.devices.learn(DATABASE_KEY.to_vec(), facts);
            }
            self.config.add_process(info);
        }
        true
    }

    /// Routes every span `pid` left, ready or not, to the next release.
    fn route_process(&mut self, pid: u32, processes: &Processes) {
        let now = Instant::now();
        self.collect_finished(processes, now, None);
        let mut ready = std::mem::take(&mut self.ready);
        for (since, span) in std::mem::take(&mut self.waiting) {
            if span.pid == pid {
                self.route(span, processes, &mut ready, now);
            } else {
                self.waiting.push_back((since, span));
            }
        }
        self.ready = ready;
    }

    /// libtango was found mapped after the process became a target.
    pub fn libraries_changed(&mut self, info: &ProcessInfo) {
        let capable = info.tango_major().is_some_and(|m| m >= 10);
        self.config.set_native_capable(info.pid, capable);
    }

    /// The per-record path: one decoded record of a traced process.
    pub fn push(&mut self, record: &Record, processes: &mut Processes) {
        let pid = record.pid();
        if !processes.is_traced(pid) {
            return;
        }
        match record {
            Record::Data { fd, direction, bytes, total_len, ts_ns, .. }
                if !self.assembler.carries_giop(pid, *fd, bytes) =>
            {
                // Not GIOP and not the rest of a GIOP message: ZMTP event frames.
                let complete = bytes.len() >= *total_len as usize;
                self.events.on_zmtp(pid, *fd, *ts_ns, *direction, bytes, complete, &mut self.finished);
            }
            Record::Data { tid, direction: Direction::Send, bytes, .. }
                if self.userspans.wants_reply(pid, *tid) && is_giop_reply(bytes) =>
            {
                // A method of this request threw: its error may be in the reply.
                self.userspans.note_reply(pid, *tid, bytes);
                self.assembler.push(record);
            }
            Record::Data { fd, direction: Direction::Recv, bytes, peer, .. } => {
                if is_giop_request(bytes)
                    && self.assembler.needs_location(pid, *fd)
                    && let Some(location) = processes.peer_location(pid, *fd, peer)
                {
                    if self.is_own_connection(&location) {
                        self.assembler.ignore_connection(pid, *fd);
                    }
                    self.assembler.set_location(pid, *fd, location);
                }
                self.assembler.push(record);
            }
            Record::ZmqSend { tid, ts_ns, .. } => {
                let serving = self.assembler.serving_context(pid, *tid);
                self.events.on_zmq_send(pid, *ts_ns, serving);
            }
            Record::UserCode(hit) => {
                let serving = self.assembler.serving_context(pid, hit.tid);
                self.userspans.push(hit, serving);
            }
            Record::Log(message) => {
                let serving = self.assembler.serving_context(pid, message.tid);
                self.logs.push(message, serving, Instant::now());
            }
            Record::Close { fd, .. } => {
                self.assembler.push(record);
                self.events.on_close(pid, *fd);
            }
            Record::Exit { .. } | Record::Exec { .. } => {
                self.assembler.push(record);
                self.events.on_exit(pid);
                // Its configuration stays until it is forgotten: spans it left still wait for
                // their device's facts and are routed by it.
                processes.mark_exited(pid);
            }
            Record::Data { .. }
            | Record::LibOpened { .. }
            | Record::Fork { .. }
            | Record::ProcessFacts(_)
            | Record::LibraryPath { .. } => self.assembler.push(record),
        }
    }

    /// The per-span path: finished spans that are ready go to `out` with their destinations;
    /// server spans wait a little for their device's class (learnt from `info` replies) unless
    /// `force`.
    pub fn release(&mut self, processes: &Processes, force: bool, out: &mut Vec<Routed>) {
        let start = out.len();
        // One clock read for the whole release: its spans are routed within microseconds.
        let now = Instant::now();
        self.note_crossings();
        if let Some(linker) = self.linker.as_mut() {
            if force {
                linker.settle_all(now);
            } else {
                linker.expire(now);
            }
        }
        // Spans routed earlier (a process's exit) go first, then this release's.
        out.append(&mut self.ready);
        self.events.release_unlinked(crate::convert::spandata::monotonic_ns(), force, &mut self.finished);
        self.collect_finished(processes, now, Some(out));
        let mut unknown_hosts = Vec::new();
        for (since, span) in &self.waiting {
            let opaque_unknown = span.device_key.as_deref().is_some_and(|k| {
                !self.devices.has_name(k) && now.saturating_duration_since(*since) >= IMPORT_AFTER
            });
            if opaque_unknown && let Some(host) = processes.info(span.pid).and_then(|p| p.tango_host()) {
                unknown_hosts.push(host);
            }
        }
        for tango_host in unknown_hosts {
            self.import(tango_host);
        }
        // Rotated in place (not taken) so the queue keeps its capacity between releases.
        for _ in 0..self.waiting.len() {
            let Some((since, span)) = self.waiting.pop_front() else { break };
            let waited_enough = now.saturating_duration_since(since) >= DEVICE_FACTS_WAIT;
            if force || self.may_go(&span) || (waited_enough && !self.is_held(&span)) {
                self.route(span, processes, out, now);
            } else {
                self.waiting.push_back((since, span));
            }
        }
        // `out[start..]` holds this release's spans, final (trace ids rewritten) and routed:
        // metrics that count every span belong here, before sampling.
        self.sample_spans(out, start, force);
    }

    /// Tail sampling, when on, of the spans routed since `start`: those of kept traces stay in
    /// `out` (with the held spans of traces kept now), the others are held; traces whose wait
    /// is over (every trace when `force`) are decided.
    fn sample_spans(&mut self, out: &mut Vec<Routed>, start: usize, force: bool) {
        let Some(sampler) = self.sampler.as_mut() else { return };
        let now = Instant::now();
        self.sampling_spans.extend(out.drain(start..));
        for routed in self.sampling_spans.drain(..) {
            let facts = sampling::span_facts(&routed.record.data);
            sampler.offer_span(facts, routed, now, out);
        }
        sampler.expire(now, force);
    }

    /// Tail sampling, when on, of the device logs routed since `start`: a log of a trace not
    /// kept (yet) waits for its trace's decision; logs of traces kept since go out first.
    fn sample_logs(&mut self, out: &mut Vec<RoutedLog>, start: usize) {
        let Some(sampler) = self.sampler.as_mut() else { return };
        let now = Instant::now();
        self.sampling_logs.extend(out.drain(start..));
        sampler.take_logs(out);
        for routed in self.sampling_logs.drain(..) {
            let trace_id = routed.record.trace.map(|t| t.trace_id);
            sampler.offer_log(trace_id, routed, now, out);
        }
    }

    /// The per-log path: device log messages that are ready go to `out` with their destinations,
    /// in the order they were logged. A message logged inside a request waits
    /// [`logs::CONTEXT_SETTLE`] (its server span may still take its client's trace id); every
    /// message waits until its device's facts are known, as spans do, at most
    /// [`logs::MAX_WAIT`], unless `force`. The first message that must wait stops the release
    /// (the ones after it are younger): a release costs what it releases, not what waits.
    pub fn release_logs(&mut self, processes: &Processes, force: bool, out: &mut Vec<RoutedLog>) {
        let start = out.len();
        // Observations first: renamed server spans, device names and classes.
        let now = Instant::now();
        self.collect_finished(processes, now, None);
        let mut unknown_hosts = Vec::new();
        while let Some(waiting) = self.logs.next_waiting() {
            let waited = now.saturating_duration_since(waiting.since);
            let must_go = force || waiting.overflowed || waited >= logs::MAX_WAIT;
            if waiting.log.context.is_some() && waited < logs::CONTEXT_SETTLE && !must_go {
                self.logs.wait_again(waiting);
                break;
            }
            // A log inside a request from another host waits for that request's trace, as its
            // span does, and goes out under the trace's final id.
            if let (Some(linker), Some(context)) = (self.linker.as_ref(), self.logs.context_of(&waiting.log))
                && linker.holds(context.trace_id)
                && !must_go
            {
                self.logs.wait_again(waiting);
                break;
            }
            let Waiting { since, mut log, .. } = waiting;
            log.context = self.logs.context_of(&log).map(|mut context| {
                if let Some(linker) = self.linker.as_ref() {
                    context.trace_id = linker.final_trace(context.trace_id);
                }
                context
            });
            let (pid, logger) = (log.pid, std::sync::Arc::clone(&log.logger));
            let resource = match self.logs.target(pid, &logger) {
                Some(target) if target.complete || !self.devices.is_known(&target.object_key) => {
                    target.resource.clone()
                }
                _ => {
                    let process = processes.info(pid);
                    let mut key = self.devices.key_named(pid, &logger);
                    if key.is_none()
                        && let Some(facts) = admin_device_facts(&logger)
                        && process.is_some_and(|p| p.cmdline.iter().any(|arg| arg == "-nodb"))
                    {
                        // Without a database, the admin device's key is its lowercased name,
                        // and its name says its server.
                        let object_key = logger.to_ascii_lowercase().into_bytes();
                        self.devices.learn(object_key.clone(), facts);
                        key = Some(object_key);
                    }
                    let known = key.as_deref().is_some_and(|k| self.devices.is_known(k));
                    // A logger that went out once without its device's facts does not wait again.
                    let waited_before = self.logs.target(pid, &logger).is_some();
                    if !known && !must_go && !waited_before {
                        if key.is_none()
                            && let Some(host) = process.and_then(|p| p.tango_host())
                        {
                            unknown_hosts.push(host);
                        }
                        self.logs.wait_again(Waiting { since, log, overflowed: false });
                        break;
                    }
                    // Without a database the object key is the lowercased device name.
                    let object_key = key.unwrap_or_else(|| logger.to_ascii_lowercase().into_bytes());
                    let name = self.devices.name(&object_key).unwrap_or_else(|| logger.to_string());
                    let resource_key = ResourceKey::Device { pid, object_key: &object_key };
                    let facts = self.devices.facts(&object_key);
                    let resource = self.resources.resolve(resource_key, process, true, Some(&name), facts);
                    let target =
                        logs::LoggerTarget { object_key, resource: resource.clone(), complete: known };
                    self.logs.set_target(pid, &logger, target);
                    resource
                }
            };
            match self.config.route_log(pid, &logger) {
                LogRouting::Export(destinations) => {
                    self.stats.logs_released += 1;
                    *self.logs_released_by.entry((pid, logger)).or_default() += 1;
                    let scope = self.logs.scope(pid, || logdata::log_scope_for(processes.info(pid)));
                    let record = logdata::to_log_record(log, resource, scope, &self.clock);
                    out.push(RoutedLog { record, destinations });
                }
                LogRouting::Native => self.stats.logs_native += 1,
                LogRouting::Drop => self.stats.logs_not_wanted += 1,
            }
        }
        for tango_host in unknown_hosts {
            self.import(tango_host);
        }
        self.sample_logs(out, start);
    }

    /// Moves what the stages finished to `waiting`; the oldest waiting span is routed when too
    /// many wait, to `release` in a release, else to `ready`. In a release, spans that need not
    /// wait are routed at once while nothing waits: the order is the one `waiting` would give,
    /// and a span is not moved through the queue for nothing.
    fn collect_finished(&mut self, processes: &Processes, now: Instant, release: Option<&mut Vec<Routed>>) {
        for observation in self.assembler.drain_observations() {
            self.on_observation(observation, processes);
        }
        self.assembler.drain_into(&mut self.finished);
        // The user code of a request follows its SERVER span, whatever its operation class.
        let mut user_code = Vec::new();
        for span in &self.finished {
            self.userspans.on_server_end(span, &mut user_code);
        }
        self.finished.append(&mut user_code);
        let mut ready = std::mem::take(&mut self.ready);
        let route_ready = release.is_some();
        let out = release.unwrap_or(&mut ready);
        let mut finished = std::mem::take(&mut self.finished);
        for mut span in finished.drain(..) {
            span.device_key = span.device_key.map(|key| self.devices.served_key(span.pid, key));
            if span.operation == OperationClass::Internal {
                continue;
            }
            if route_ready && self.waiting.is_empty() && self.may_go(&span) {
                self.route(span, processes, out, now);
                continue;
            }
            if self.waiting.len() >= MAX_WAITING
                && let Some((_, oldest)) = self.waiting.pop_front()
            {
                self.stats.waiting_overflow += 1;
                self.route(oldest, processes, out, now);
            }
            self.waiting.push_back((now, span));
        }
        self.ready = ready;
        // Kept for its capacity: finished spans pass through here at every release.
        if self.finished.is_empty() {
            self.finished = finished;
        }
    }

    /// What a daemon on another host said about calls between our hosts.
    pub fn peer_message(&mut self, message: Incoming) {
        self.note_crossings();
        if let Some(linker) = self.linker.as_mut() {
            linker.on_incoming(message, Instant::now());
        }
    }

    /// What the daemons of other hosts are to be told, in the order it happened.
    pub fn take_outgoing(&mut self, out: &mut Vec<Outgoing>) {
        self.note_crossings();
        if let Some(linker) = self.linker.as_mut() {
            linker.take_outgoing(out);
        }
    }

    /// Hands the requests that crossed hosts to the linker, in the order they were seen.
    fn note_crossings(&mut self) {
        self.assembler.drain_crossings(&mut self.crossings);
        if self.crossings.is_empty() {
            return;
        }
        let now = Instant::now();
        for crossing in self.crossings.drain(..) {
            if let Some(linker) = self.linker.as_mut() {
                linker.on_crossing(crossing, now);
            }
        }
    }

    /// Asks for every database the given processes use (at start).
    pub fn import_all(&mut self, processes: &Processes) {
        let hosts: HashSet<String> = processes.running().iter().filter_map(|p| p.tango_host()).collect();
        for host in hosts {
            self.import(host);
        }
    }

    fn import(&mut self, tango_host: String) {
        if self.devices.want_import(&tango_host) {
            self.queries.push(DbQuery::Import { tango_host });
        }
    }

    /// Database queries to make, asked for since the last call.
    pub fn take_queries(&mut self) -> Vec<DbQuery> {
        std::mem::take(&mut self.queries)
    }

    /// What a database query found.
    pub fn learn_import(&mut self, import: dbclient::Import) {
        for (key, facts) in import.devices {
            self.devices.learn(key, facts);
        }
        for (device, properties) in import.properties {
            self.config.set_properties(&device, &properties);
        }
    }

    /// Shared with the database client, which notes its connections' ports here.
    pub fn own_ports(&self) -> OwnPorts {
        Arc::clone(&self.own_ports)
    }

    /// The run loop saw the probes' count of lost records grow, at about `now_ns` (kernel
    /// monotonic time, the records' clock). Messages in progress cannot be trusted any more and
    /// calls pending now may have lost their reply: they end incomplete if it does not come soon
    /// (see [`Pipeline::expire`]).
    pub fn records_lost(&mut self, now_ns: u64) {
        self.assembler.records_lost(now_ns);
        self.events.records_lost();
        self.userspans.records_lost();
    }

    /// Timer work: forgets links too old to matter, ends calls that waited too long or whose
    /// reply was probably lost.
    pub fn expire(&mut self, now_ns: u64) {
        self.assembler.expire(now_ns);
        self.events.expire(now_ns);
        self.logs.expire(Instant::now());
    }

    /// A process is gone for good (some time after its exit, or its pid has a new process):
    /// every stage frees its state.
    pub fn forget_process(&mut self, pid: u32) {
        self.config.remove_process(pid);
        self.released_by.remove(&pid);
        self.logs_released_by.retain(|(p, _), _| *p != pid);
        self.devices.forget_process(pid);
        self.resources.forget(pid);
        self.logs.forget_process(pid);
        self.userspans.forget_process(pid);
    }

    /// Ends every call still open (shutdown).
    pub fn flush_all(&mut self, now_ns: u64) {
        self.assembler.flush_all(now_ns);
    }

    /// Spans released so far for `pid`'s `device` (`None`: the process's own spans).
    pub fn released(&self, pid: u32, device: Option<&str>) -> u64 {
        let Some(counts) = self.released_by.get(&pid) else { return 0 };
        match device {
            Some(device) => counts.devices.get(device).copied().unwrap_or(0),
            None => counts.process,
        }
    }

    /// Device logs released so far for `pid`'s `device`.
    pub fn released_logs(&self, pid: u32, device: &str) -> u64 {
        self.logs_released_by
            .iter()
            .filter(|((p, logger), _)| *p == pid && logger.eq_ignore_ascii_case(device))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn configuration(&self) -> &Configuration {
        &self.config
    }

    pub fn configuration_mut(&mut self) -> &mut Configuration {
        &mut self.config
    }

    pub fn devices(&self) -> &DeviceRegistry {
        &self.devices
    }

    /// (GIOP messages, spans, unparsable messages) so far, for the stop line.
    pub fn totals(&self) -> (u64, u64, u64) {
        let stats = self.assembler.stats();
        (stats.messages, stats.spans, stats.unparsable + self.events.stats().unparsable)
    }

    /// The live view's window now (`top`), devices and processes named.
    pub fn live_snapshot(&mut self, processes: &Processes) -> LiveSnapshot {
        let devices = &self.devices;
        self.live.snapshot(
            Instant::now(),
            |key| devices.name(key),
            |pid| processes.info(pid).map(|p| p.comm.clone()),
        )
    }

    /// Every stage's counters and table sizes, in pipeline order.
    pub fn report(&self, processes: &Processes) -> StageStats {
        let mut out = StageStats::default();
        processes.report(&mut out);
        self.assembler.report(&mut out);
        self.events.report(&mut out);
        self.logs.report(&mut out);
        self.userspans.report(&mut out);
        self.devices.report(&mut out);
        self.config.stats(&mut out);
        self.resources.report(&mut out);
        if let Some(linker) = &self.linker {
            linker.report(&mut out);
        }
        self.live.report(&mut out);
        if let Some(sampler) = &self.sampler {
            sampler.report(&mut out);
        }
        if let Some(metrics) = &self.metrics {
            metrics.report(&mut out);
        }
        const STAGE: &str = "pipeline";
        out.push(STAGE, "released", self.stats.released);
        out.push(STAGE, "not_wanted", self.stats.not_wanted);
        out.push(STAGE, "native", self.stats.native);
        out.push(STAGE, "waiting_overflow", self.stats.waiting_overflow);
        out.push(STAGE, "logs_released", self.stats.logs_released);
        out.push(STAGE, "logs_not_wanted", self.stats.logs_not_wanted);
        out.push(STAGE, "logs_native", self.stats.logs_native);
        out.size(STAGE, "waiting_span_entries", self.waiting.len());
        let released_entries: usize =
            self.released_by.values().map(|c| usize::from(c.process > 0) + c.devices.len()).sum();
        out.size(STAGE, "released_count_entries", released_entries);
        out.size(STAGE, "released_log_count_entries", self.logs_released_by.len());
        out
    }

    fn on_observation(&mut self, observation: Observation, processes: &Processes) {
        match observation {
            Observation::Device { object_key, facts } => self.devices.learn(object_key, facts),
            Observation::Serves { pid, object_key } => self.devices.serves(pid, object_key),
            Observation::DeviceProperties { device, properties } => {
                self.config.set_properties(&device, &properties);
            }
            Observation::Command { pid, object_key, command, argin } => {
                // Telemetry commands go to a server's admin device (`dserver/<server>/<instance>`);
                // they apply also when a 9.x server answers "command not found".
                let name = self.devices.name(&object_key);
                log::debug!("pid {pid}: command {command} on {name:?}");
                if name.as_deref().is_some_and(|name| name.starts_with("dserver/"))
                    && self.config.admin_command(pid, &command, argin.as_ref())
                {
                    log::info!(
                        "pid {pid}: {command} on {} applied to the telemetry configuration",
                        name.unwrap_or_default()
                    );
                }
            }
            Observation::Renamed { old, new } => self.logs.rename(old, new, Instant::now()),
            Observation::Exported { pid, device } => {
                if let Some(tango_host) = processes.info(pid).and_then(|p| p.tango_host()) {
                    self.queries.push(DbQuery::Properties { tango_host, device });
                }
            }
        }
    }

    /// Where a span goes, by the configuration of its device (or process), and its export form.
    /// `now` is the time of the release routing it.
    fn route(&mut self, mut span: AssembledSpan, processes: &Processes, out: &mut Vec<Routed>, now: Instant) {
        if let Some(linker) = self.linker.as_mut() {
            linker.rewrite(&mut span, now);
        }
        self.live.observe(&span, now);
        // Borrowed from the registry: the span's export form copies what it keeps.
        let devices = &self.devices;
        let device = span.device_key.as_deref().and_then(|k| devices.name_ref(k));
        let target = span
            .target_key
            .as_deref()
            .map(|t| devices.name_ref(t).map_or_else(|| hex::encode(t), Cow::into_owned));
        // Counted before the configuration (or any sampling after it) keeps or drops the span.
        if let Some(metrics) = self.metrics.as_mut() {
            metrics.observe(&span, device.as_deref(), target.as_deref());
        }
        match self.config.route(span.pid, device.as_deref(), class_of(&span, device.as_deref())) {
            Routing::Export(destinations) if !destinations.is_empty() => {
                self.stats.released += 1;
                self.released_by.entry(span.pid).or_default().count(device.as_deref());
                let process = processes.info(span.pid);
                let is_server = self.assembler.is_server(span.pid);
                let key = match &span.device_key {
                    Some(object_key) => ResourceKey::Device { pid: span.pid, object_key },
                    None => ResourceKey::Process { pid: span.pid },
                };
                let facts = span.device_key.as_deref().and_then(|k| devices.facts(k));
                let resource = self.resources.resolve(key, process, is_server, device.as_deref(), facts);
                let scope = resources::scope_for(process);
                let data = spandata::to_span_data(span, target, scope, &self.clock);
                out.push(Routed { record: SpanRecord { resource, data }, destinations });
            }
            Routing::Native => self.stats.native += 1,
            Routing::Export(_) | Routing::Drop => self.stats.not_wanted += 1,
        }
    }

    /// Whether `span` needs to wait no longer: its device's facts are known and no other host's
    /// daemon is awaited.
    fn may_go(&self, span: &AssembledSpan) -> bool {
        let known = span.device_key.as_deref().is_none_or(|key| self.devices.is_known(key));
        known && !self.is_held(span)
    }

    /// A span of a request from another host waits (boundedly) for its trace to be known.
    fn is_held(&self, span: &AssembledSpan) -> bool {
        self.linker.as_ref().is_some_and(|l| l.holds(span.context.trace_id))
    }

    /// Whether a server-side connection's client is one of the daemon's database connections.
    fn is_own_connection(&self, location: &str) -> bool {
        let Some(port) = location.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()) else {
            return false;
        };
        location.starts_with("giop:tcp:") && self.own_ports.lock().is_ok_and(|ports| ports.contains(&port))
    }
}

/// Spans released for one process: its own and each of its devices'.
#[derive(Default)]
struct ReleasedCounts {
    process: u64,
    /// By device name; a name is copied once, when its first span is counted.
    devices: HashMap<String, u64>,
}

impl ReleasedCounts {
    fn count(&mut self, device: Option<&str>) {
        match device {
            Some(name) => match self.devices.get_mut(name) {
                Some(count) => *count += 1,
                None => {
                    self.devices.insert(name.to_owned(), 1);
                }
            },
            None => self.process += 1,
        }
    }
}

/// The admin device `dserver/<server>/<instance>` is of class `DServer` and serves
/// `<server>/<instance>`.
fn admin_device_facts(name: &str) -> Option<DeviceFacts> {
    let server = name.get(..8).filter(|p| p.eq_ignore_ascii_case("dserver/")).and(name.get(8..))?;
    (server.split('/').count() == 2).then(|| DeviceFacts {
        name: None,
        dev_class: Some("DServer".to_string()),
        server_id: Some(server.to_string()),
    })
}

/// The database server (`DataBaseds <instance>`) serves `sys/database/2` of class `DataBase`.
fn database_server_facts(info: &ProcessInfo) -> Option<DeviceFacts> {
    let program = info.cmdline.first()?;
    if !program.ends_with("DataBaseds") {
        return None;
    }
    let instance = info.cmdline.get(1)?;
    Some(DeviceFacts {
        name: Some(crate::assemble::naming::DATABASE_DEVICE.to_string()),
        dev_class: Some("DataBase".to_string()),
        server_id: Some(format!("DataBaseds/{instance}")),
    })
}

/// The topic class a span is routed by. cppTango traces no command an admin device serves
/// (`Kill`, `SetLoggingLevel`, `DevPollStatus`, …): their SERVER spans are among what native
/// telemetry leaves out, known only once the device's name is (opaque keys of database servers).
/// The subscription's is an `events` span already.
fn class_of(span: &AssembledSpan, device: Option<&str>) -> OperationClass {
    let admin = device.is_some_and(|name| name.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("dserver/")));
    if span.kind == SpanKind::Server && admin && span.operation == OperationClass::User {
        OperationClass::Extended
    } else {
        span.operation
    }
}

fn is_giop_request(bytes: &[u8]) -> bool {
    bytes.get(..4) == Some(b"GIOP") && bytes.get(7) == Some(&0)
}

fn is_giop_reply(bytes: &[u8]) -> bool {
    bytes.get(..4) == Some(b"GIOP") && bytes.get(7) == Some(&1)
}

#[cfg(test)]
mod tests {
    //! Churn through the whole pipeline with real GIOP messages captured from PyTango 10.3.1:
    //! every span comes out, and every table goes back to its size before the churn.
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        reason = "tests"
    )]

    use super::*;
    use crate::probe::record::Peer;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../tracer-wire/tests/fixtures/giop/{name}.bin", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// GIOP 1.0 messages with an empty service-context list keep their request id at offset 16.
    fn with_request_id(mut bytes: Vec<u8>, id: u32) -> Vec<u8> {
        bytes.splice(16..20, id.to_le_bytes());
        bytes
    }

    fn data(pid: u32, fd: i32, ts_ns: u64, direction: Direction, bytes: &[u8]) -> Record<'static> {
        Record::Data {
            pid,
            tid: pid,
            fd,
            ts_ns,
            direction,
            total_len: bytes.len() as u32,
            bytes: bytes.to_vec().into(),
            peer: Default::default(),
            tcp: None,
        }
    }

    struct Host {
        pipeline: Pipeline,
        processes: Processes,
        routed: Vec<Routed>,
        routed_logs: Vec<RoutedLog>,
        ts_ns: u64,
    }

    impl Host {
        fn new() -> Self {
            let policy = Policy {
                trace_by_default: true,
                destinations: vec![Destination::Store { path: "test".into() }],
                log_destinations: vec![Destination::Store { path: "test".into() }],
                extended_operations: false,
            };
            Host {
                pipeline: Pipeline::new(2048, policy),
                processes: Processes::new(None),
                routed: Vec::new(),
                routed_logs: Vec::new(),
                ts_ns: 1_000,
            }
        }

        fn start(&mut self, pid: u32) {
            self.start_with(ProcessInfo { pid, comm: "test".into(), ..Default::default() });
        }

        fn start_with(&mut self, info: ProcessInfo) {
            assert!(self.pipeline.start_process(info, &mut self.processes));
        }

        fn push(&mut self, record: Record) {
            self.pipeline.push(&record, &mut self.processes);
        }

        fn next_ts(&mut self) -> u64 {
            self.ts_ns += 1_000;
            self.ts_ns
        }

        /// A client process that makes one call to `server` and exits.
        fn short_client(&mut self, client: u32, server: u32, server_fd: i32, id: u32) {
            let request = with_request_id(fixture("demo-req-read_attributes_5"), id);
            let reply = with_request_id(fixture("demo-rep-read_attributes_5"), id);
            self.start(client);
            for (pid, fd, direction, bytes) in [
                (client, 7, Direction::Send, &request),
                (server, server_fd, Direction::Recv, &request),
                (server, server_fd, Direction::Send, &reply),
                (client, 7, Direction::Recv, &reply),
            ] {
                let ts_ns = self.next_ts();
                self.push(data(pid, fd, ts_ns, direction, bytes));
            }
            let ts_ns = self.next_ts();
            self.push(Record::Close { pid: server, fd: server_fd, ts_ns });
            self.push(Record::Exit { pid: client, ts_ns });
        }

        fn stop(&mut self, pid: u32) {
            let ts_ns = self.next_ts();
            self.push(Record::Exit { pid, ts_ns });
        }

        /// Releases everything and forgets every process that exited, as the tick does later.
        fn settle(&mut self) -> usize {
            self.pipeline.release(&self.processes, true, &mut self.routed);
            self.pipeline.release_logs(&self.processes, true, &mut self.routed_logs);
            self.pipeline.expire(self.ts_ns);
            for pid in self.processes.take_gone(Duration::ZERO) {
                self.pipeline.forget_process(pid);
            }
            self.routed.drain(..).count()
        }

        fn tables(&self) -> Vec<(&'static str, &'static str, u64)> {
            self.pipeline.report(&self.processes).tables().collect()
        }
    }

    /// A message logged by `tid` of `pid` through `logger`, at INFO, from `dev.py` line 12.
    fn log(pid: u32, tid: u32, ts_ns: u64, logger: &str, text: &[u8]) -> Record<'static> {
        Record::Log(crate::probe::record::LogMessage {
            pid,
            tid,
            ts_ns,
            level: 500,
            line: Some(12),
            logger: logger.as_bytes().to_vec().into(),
            file: b"/srv/tango/dev.py".to_vec().into(),
            message: text.to_vec().into(),
            message_len: text.len() as u32,
            unreadable: 0,
        })
    }

    impl Host {
        /// One call from `client` to `server`; `during` is logged by the serving thread between
        /// the request and the reply.
        fn call_logging(&mut self, client: u32, server: u32, id: u32, during: &[u8]) {
            let request = with_request_id(fixture("demo-req-read_attributes_5"), id);
            let reply = with_request_id(fixture("demo-rep-read_attributes_5"), id);
            for (pid, fd, direction, bytes) in
                [(client, 7, Direction::Send, &request), (server, 21, Direction::Recv, &request)]
            {
                let ts_ns = self.next_ts();
                self.push(data(pid, fd, ts_ns, direction, bytes));
            }
            let ts_ns = self.next_ts();
            self.push(log(server, server, ts_ns, "test/demo/1", during));
            for (pid, fd, direction, bytes) in
                [(server, 21, Direction::Send, &reply), (client, 7, Direction::Recv, &reply)]
            {
                let ts_ns = self.next_ts();
                self.push(data(pid, fd, ts_ns, direction, bytes));
            }
        }
    }

    fn bodies(host: &Host) -> Vec<&str> {
        host.routed_logs.iter().map(|l| l.record.body.as_str()).collect()
    }

    #[test]
    fn a_message_logged_inside_a_request_joins_its_server_span_and_resource() {
        let mut host = Host::new();
        let (client, server) = (11, 10);
        host.start(server);
        host.start(client);
        host.call_logging(client, server, 1, b"inside");
        let ts_ns = host.next_ts();
        // Another thread of the server, serving nothing; and the admin device's core logger.
        host.push(log(server, server + 1, ts_ns, "test/demo/1", b"outside"));
        host.push(log(server, server, ts_ns + 1, "dserver/Demo/demo", b"admin"));
        host.pipeline.release(&host.processes, true, &mut host.routed);
        host.pipeline.release_logs(&host.processes, true, &mut host.routed_logs);
        assert_eq!(bodies(&host), vec!["inside", "outside", "admin"]);
        let server_span = host
            .routed
            .iter()
            .find(|r| r.record.data.span_kind == SpanKind::Server)
            .expect("the server span");
        let inside = &host.routed_logs[0].record;
        let trace = inside.trace.expect("logged inside the request");
        assert_eq!(trace.trace_id, server_span.record.data.span_context.trace_id());
        assert_eq!(trace.span_id, server_span.record.data.span_context.span_id());
        assert_eq!(trace.flags.to_u8(), 3);
        assert_eq!(inside.resource, server_span.record.resource, "the device's own resource");
        assert_eq!(inside.severity_text, "INFO");
        let attributes: Vec<String> =
            inside.attributes.iter().map(|kv| format!("{}={}", kv.key, kv.value)).collect();
        assert_eq!(attributes, vec!["code.filepath=dev.py", "code.lineno=12"]);
        assert_eq!((inside.scope.name(), inside.scope.version()), ("cppTango", Some("unknown")));
        let outside = &host.routed_logs[1].record;
        assert!(outside.trace.is_none(), "no request on that thread");
        assert_eq!(outside.resource, server_span.record.resource);
        let admin = &host.routed_logs[2].record;
        let instance = admin.resource.get(&opentelemetry::Key::new("service.instance.id"));
        assert_eq!(instance.map(|v| v.to_string()).as_deref(), Some("dserver/demo/demo"));
    }

    #[test]
    fn a_server_span_renamed_after_its_client_is_found_late_takes_its_messages_along() {
        let mut host = Host::new();
        let (client, server) = (11, 10);
        host.start(server);
        host.start(client);
        let request = with_request_id(fixture("demo-req-read_attributes_5"), 1);
        let reply = with_request_id(fixture("demo-rep-read_attributes_5"), 1);
        // The server's read is reported before the client's write.
        let ts_ns = host.next_ts();
        host.push(data(server, 21, ts_ns + 10, Direction::Recv, &request));
        host.push(log(server, server, ts_ns + 20, "test/demo/1", b"early"));
        host.push(data(client, 7, ts_ns, Direction::Send, &request));
        host.push(data(server, 21, ts_ns + 30, Direction::Send, &reply));
        host.push(data(client, 7, ts_ns + 40, Direction::Recv, &reply));
        host.pipeline.release(&host.processes, true, &mut host.routed);
        host.pipeline.release_logs(&host.processes, true, &mut host.routed_logs);
        let client_span = host
            .routed
            .iter()
            .find(|r| r.record.data.span_kind == SpanKind::Client)
            .expect("the client span");
        let trace = host.routed_logs[0].record.trace.expect("in the request");
        assert_eq!(trace.trace_id, client_span.record.data.span_context.trace_id());
    }

    #[test]
    fn logs_follow_the_logging_configuration() {
        let env = |pid: u32, vars: &[(&str, &str)], tango: &str| {
            use crate::discover::procinfo::{MappedLibrary, TangoLibraries};
            let environ = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let tango = Some(MappedLibrary { path: "libtango.so".into(), version: Some(tango.into()) });
            let libraries = TangoLibraries { tango, ..Default::default() };
            ProcessInfo { pid, comm: "server".into(), environ, libraries, ..Default::default() }
        };
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, usize);
        let cases: [Case; 5] = [
            (&[], "9.3.4", 1),
            (&[("TANGO_TELEMETRY_TYPES", "tracing")], "9.3.4", 0),
            (&[("TANGO_TELEMETRY_ENABLE", "off")], "9.3.4", 0),
            // cppTango 10 told to export its own telemetry: its logs are not exported twice.
            (&[("TANGO_TELEMETRY_ENABLE", "on")], "10.3.3", 0),
            // Only the types: the daemon's default enable decides, and cppTango exports nothing.
            (&[("TANGO_TELEMETRY_TYPES", "logging")], "10.3.3", 1),
        ];
        for (vars, tango, expected) in cases {
            let mut host = Host::new();
            host.start_with(env(10, vars, tango));
            let ts_ns = host.next_ts();
            host.push(log(10, 10, ts_ns, "test/demo/1", b"hello"));
            host.settle();
            assert_eq!(host.routed_logs.len(), expected, "{vars:?} with libtango {tango}");
        }
    }

    #[test]
    fn tables_return_to_their_baseline_after_client_and_server_churn() {
        let mut host = Host::new();
        host.start(10);
        host.short_client(11, 10, 21, 1);
        assert_eq!(host.settle(), 2, "one client and one server span");
        let baseline = host.tables();

        let mut spans = 0;
        let mut server = 10;
        for round in 0..50u32 {
            for client in 0..20u32 {
                let pid = 1_000 + round * 100 + client;
                host.short_client(pid, server, 30 + client as i32, client + 2);
            }
            // The server restarts under a new pid.
            host.stop(server);
            server = 100_000 + round;
            host.start(server);
            spans += host.settle();
        }
        assert_eq!(spans, 50 * 20 * 2, "every call gives a client and a server span");
        host.short_client(11, server, 21, 1);
        host.settle();
        assert_eq!(host.tables(), baseline);
        assert!(host.pipeline.report(&host.processes).iter().all(|(_, name, value)| {
            !(name.starts_with("refused") || name.ends_with("overflow")) || value == 0
        }));
    }

    fn telemetry_off(pid: u32) -> ProcessInfo {
        let environ =
            std::collections::HashMap::from([("TANGO_TELEMETRY_ENABLE".to_string(), "off".to_string())]);
        ProcessInfo { pid, comm: "server".into(), environ, ..Default::default() }
    }

    fn waiting(host: &Host) -> u64 {
        host.pipeline.report(&host.processes).get("pipeline", "waiting_span_entries").unwrap()
    }

    #[test]
    fn spans_a_process_left_are_routed_by_its_own_configuration_after_it_exits() {
        let mut host = Host::new();
        host.start_with(telemetry_off(10));
        host.short_client(11, 10, 21, 1);
        host.stop(10);
        host.pipeline.release(&host.processes, false, &mut host.routed);
        assert_eq!(waiting(&host), 1, "the server span waits for its device's class");
        assert_eq!(host.settle(), 1, "only the client's span: the server's telemetry is off");
        let report = host.pipeline.report(&host.processes);
        assert_eq!(report.get("pipeline", "not_wanted"), Some(1));
        assert_eq!(report.get("configure", "process_entries"), Some(0), "forgotten with the process");
    }

    #[test]
    fn metrics_count_spans_the_configuration_drops_with_the_attribute_the_request_names() {
        use crate::metrics::aggregate::{Instrument, Outcome};
        let mut host = Host::new();
        host.pipeline.enable_metrics(100);
        host.start_with(telemetry_off(10));
        host.short_client(11, 10, 21, 1);
        host.short_client(12, 10, 22, 2);
        assert_eq!(host.settle(), 2, "only the clients' spans: the server's telemetry is off");
        let snapshot = host.pipeline.metrics().unwrap().snapshot(Vec::new());
        let sides: Vec<_> = snapshot
            .series
            .iter()
            .map(|s| (s.instrument, &*s.operation, &*s.argument, s.outcome, s.histogram.count))
            .collect();
        assert_eq!(
            sides,
            vec![
                (Instrument::ServerCall, "read_attributes_5", "temperature", Outcome::Ok, 2),
                (Instrument::ClientCall, "read_attribute", "temperature", Outcome::Ok, 2),
            ]
        );
        assert_eq!(host.pipeline.report(&host.processes).get("metrics", "spans_observed"), Some(4));
    }

    #[test]
    fn a_pid_adopted_again_before_it_is_forgotten_starts_afresh() {
        let mut host = Host::new();
        host.start_with(telemetry_off(10));
        host.short_client(11, 10, 21, 1);
        host.pipeline.release(&host.processes, false, &mut host.routed);
        assert_eq!(host.pipeline.devices().served_by(10).count(), 1);
        // exec: the pid runs a new program, traced by default, before the old one is forgotten.
        host.stop(10);
        host.start(10);
        assert_eq!(waiting(&host), 0, "the old program's span is routed at once");
        assert_eq!(host.pipeline.devices().served_by(10).count(), 0, "its devices are forgotten");
        let report = host.pipeline.report(&host.processes);
        assert_eq!(report.get("pipeline", "not_wanted"), Some(1), "by the old program's configuration");
        host.short_client(12, 10, 22, 2);
        assert_eq!(host.settle(), 3, "the first client's span, then both spans of the second call");
    }

    /// The client calls the admin device `dserver/demo/demo` and subscribes to an event through it.
    #[test]
    fn admin_device_commands_have_no_server_span_but_the_subscription_has_one() {
        let mut host = Host::new();
        let (client, server) = (11, 10);
        host.start(server);
        host.start(client);
        for (request, reply) in [
            ("admin-req-command_inout_4-querydevice", "admin-rep-command_inout_4-querydevice"),
            (
                "tele-req-command_inout_4-zmqeventsubscriptionchange",
                "tele-rep-command_inout_4-zmqeventsubscriptionchange",
            ),
        ] {
            let (request, reply) = (fixture(request), fixture(reply));
            for (pid, fd, direction, bytes) in [
                (client, 7, Direction::Send, &request),
                (server, 21, Direction::Recv, &request),
                (server, 21, Direction::Send, &reply),
                (client, 7, Direction::Recv, &reply),
            ] {
                let ts_ns = host.next_ts();
                host.push(data(pid, fd, ts_ns, direction, bytes));
            }
        }
        host.pipeline.release(&host.processes, true, &mut host.routed);
        let spans: Vec<(opentelemetry::trace::SpanKind, String)> = host
            .routed
            .iter()
            .map(|r| {
                let argument = r
                    .record
                    .data
                    .attributes
                    .iter()
                    .find(|kv| kv.key.as_str() == "tango.operation.argument")
                    .map(|kv| kv.value.to_string())
                    .unwrap_or_default();
                (r.record.data.span_kind.clone(), argument)
            })
            .collect();
        // The subscribing client had its own telemetry on (W3C context): its CLIENT span is native.
        assert_eq!(
            spans,
            vec![
                (SpanKind::Client, "QueryDevice".to_string()),
                (SpanKind::Server, "ZmqEventSubscriptionChange".to_string())
            ]
        );
    }

    /// Every GIOP and ZMTP capture of the parsers' fixtures.
    fn captures(kind: &str) -> &'static [Vec<u8>] {
        static GIOP: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
        static ZMTP: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
        let cell = if kind == "giop" { &GIOP } else { &ZMTP };
        cell.get_or_init(|| {
            let dir = format!("{}/../tracer-wire/tests/fixtures/{kind}", env!("CARGO_MANIFEST_DIR"));
            let mut paths: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
            paths.sort();
            paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
        })
    }

    /// How a capture reaches the pipeline.
    #[derive(Clone, Debug)]
    enum Cut {
        Whole,
        /// Only a prefix was copied by the probe.
        Truncated(usize),
        /// In two calls.
        Split(usize),
        /// One byte changed.
        Corrupted(usize, u8),
        /// Bytes that are no protocol at all.
        Garbage(Vec<u8>),
    }

    #[derive(Clone, Debug)]
    enum Op {
        Giop { pid: usize, tid: u32, fd: i32, send: bool, capture: usize, cut: Cut },
        Zmtp { pid: usize, fd: i32, send: bool, capture: usize, cut: Cut },
        Close { pid: usize, fd: i32 },
        Exit { pid: usize },
        Exec { pid: usize },
        Fork { pid: usize, child: usize },
        ZmqSend { pid: usize, tid: u32 },
        Log { pid: usize, tid: u32, logger: usize, text: Vec<u8> },
        UserCode { pid: usize, tid: u32, point: u8 },
        RecordsLost,
        Expire { advance_ms: u64 },
        Release,
    }

    const PIDS: [u32; 4] = [10, 11, 12, 13];
    /// The fixtures' device, another one, and an admin device's core logger.
    const LOGGERS: [&str; 3] = ["test/demo/1", "test/other/2", "dserver/Demo/demo"];

    fn cut() -> impl proptest::strategy::Strategy<Value = Cut> {
        use proptest::prelude::*;
        prop_oneof![
            4 => Just(Cut::Whole),
            1 => (0usize..400).prop_map(Cut::Truncated),
            1 => (0usize..400).prop_map(Cut::Split),
            1 => (0usize..400, any::<u8>()).prop_map(|(at, b)| Cut::Corrupted(at, b)),
            1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Cut::Garbage),
        ]
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let pid = 0..PIDS.len();
        prop_oneof![
            12 => (pid.clone(), 0u32..3, 0i32..3, any::<bool>(), 0..captures("giop").len(), cut())
                .prop_map(|(pid, tid, fd, send, capture, cut)| Op::Giop { pid, tid, fd, send, capture, cut }),
            2 => (pid.clone(), 3i32..5, any::<bool>(), 0..captures("zmtp").len(), cut())
                .prop_map(|(pid, fd, send, capture, cut)| Op::Zmtp { pid, fd, send, capture, cut }),
            1 => (pid.clone(), 0i32..5).prop_map(|(pid, fd)| Op::Close { pid, fd }),
            1 => pid.clone().prop_map(|pid| Op::Exit { pid }),
            1 => pid.clone().prop_map(|pid| Op::Exec { pid }),
            1 => (pid.clone(), pid.clone()).prop_map(|(pid, child)| Op::Fork { pid, child }),
            1 => (pid.clone(), 0u32..3).prop_map(|(pid, tid)| Op::ZmqSend { pid, tid }),
            2 => (pid.clone(), 0u32..3, 0..LOGGERS.len(), proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(pid, tid, logger, text)| Op::Log { pid, tid, logger, text }),
            3 => (pid, 0u32..3, 0u8..8).prop_map(|(pid, tid, point)| Op::UserCode { pid, tid, point }),
            1 => Just(Op::RecordsLost),
            1 => (0u64..3_000).prop_map(|advance_ms| Op::Expire { advance_ms }),
            1 => Just(Op::Release),
        ]
    }

    /// The records `cut` makes of `bytes`.
    fn cut_into(bytes: &[u8], cut: &Cut) -> Vec<(Vec<u8>, u32)> {
        let whole = |b: &[u8]| (b.to_vec(), b.len() as u32);
        match cut {
            Cut::Whole => vec![whole(bytes)],
            Cut::Truncated(keep) => vec![(bytes[..(*keep).min(bytes.len())].to_vec(), bytes.len() as u32)],
            Cut::Split(at) => {
                let (head, tail) = bytes.split_at((*at).min(bytes.len()));
                vec![whole(head), whole(tail)]
            }
            Cut::Corrupted(at, byte) => {
                let mut changed = bytes.to_vec();
                if !changed.is_empty() {
                    let at = at % changed.len();
                    changed[at] = *byte;
                }
                vec![whole(&changed)]
            }
            Cut::Garbage(garbage) => vec![whole(garbage)],
        }
    }

    impl Host {
        fn apply(&mut self, op: &Op) {
            let ts_ns = self.next_ts();
            let pid_of = |i: usize| PIDS[i];
            let direction = |send: bool| if send { Direction::Send } else { Direction::Recv };
            match op {
                Op::Giop { pid, tid, fd, send, capture, cut } => {
                    for (bytes, total_len) in cut_into(&captures("giop")[*capture], cut) {
                        let (pid, ts_ns) = (pid_of(*pid), self.next_ts());
                        let tid = pid + tid;
                        let direction = direction(*send);
                        let peer = Peer::Inet(std::net::Ipv4Addr::LOCALHOST, 4321);
                        self.push(Record::Data {
                            pid,
                            tid,
                            fd: *fd,
                            ts_ns,
                            direction,
                            total_len,
                            bytes: bytes.into(),
                            peer,
                            tcp: None,
                        });
                    }
                }
                Op::Zmtp { pid, fd, send, capture, cut } => {
                    for (bytes, total_len) in cut_into(&captures("zmtp")[*capture], cut) {
                        let (pid, ts_ns) = (pid_of(*pid), self.next_ts());
                        let direction = direction(*send);
                        let peer = Peer::Unknown;
                        self.push(Record::Data {
                            pid,
                            tid: pid,
                            fd: *fd,
                            ts_ns,
                            direction,
                            total_len,
                            bytes: bytes.into(),
                            peer,
                            tcp: None,
                        });
                    }
                }
                Op::Close { pid, fd } => self.push(Record::Close { pid: pid_of(*pid), fd: *fd, ts_ns }),
                Op::Exit { pid } => self.push(Record::Exit { pid: pid_of(*pid), ts_ns }),
                Op::Exec { pid } => self.push(Record::Exec { pid: pid_of(*pid), ts_ns }),
                Op::Fork { pid, child } => {
                    self.push(Record::Fork { pid: pid_of(*pid), child: pid_of(*child), ts_ns })
                }
                Op::ZmqSend { pid, tid } => {
                    let pid = pid_of(*pid);
                    self.push(Record::ZmqSend { pid, tid: pid + tid, ts_ns })
                }
                Op::Log { pid, tid, logger, text } => {
                    let pid = pid_of(*pid);
                    self.push(log(pid, pid + tid, ts_ns, LOGGERS[*logger], text));
                }
                Op::UserCode { pid, tid, point } => {
                    let pid = pid_of(*pid);
                    self.push(Record::UserCode(crate::probe::record::UserCodeHit {
                        pid,
                        tid: pid + tid,
                        ts_ns,
                        point: *point,
                        device: 0x1000,
                        class: b"Demo".to_vec().into(),
                        name: format!("attr{point}").into_bytes().into(),
                        unreadable: 0,
                        taken: tid % 2 == 0,
                    }))
                }
                Op::RecordsLost => self.pipeline.records_lost(ts_ns),
                Op::Expire { advance_ms } => {
                    self.ts_ns += advance_ms * 1_000_000;
                    self.pipeline.expire(self.ts_ns);
                }
                Op::Release => {
                    self.pipeline.release(&self.processes, false, &mut self.routed);
                    self.routed.clear();
                }
            }
        }
    }

    /// Tables that outlive the processes by design: facts about devices and their properties
    /// (kept by name for servers the daemon does not trace, until their table is full), the
    /// database import rate limit, and the routing cache (emptied at every configuration change).
    /// Renamed server spans are kept for a few seconds of wall-clock time for the messages logged
    /// under them, whatever process they were in.
    const NOT_PER_PROCESS: [&str; 5] = [
        "device_entries",
        "device_property_entries",
        "database_entries",
        "route_cache_entries",
        "renamed_span_entries",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// Random record sequences mixing real captures, cut, corrupted and garbage bytes with
        /// lifecycle records and losses: no panic, and once every process exited and the
        /// expiries passed, every per-process table of every stage is empty.
        #[test]
        fn random_record_sequences_never_panic_and_leave_no_state(ops in proptest::collection::vec(op(), 1..120)) {
            let mut host = Host::new();
            for pid in PIDS {
                host.start(pid);
            }
            for op in &ops {
                host.apply(op);
            }
            for pid in PIDS {
                let ts_ns = host.next_ts();
                host.push(Record::Exit { pid, ts_ns });
            }
            host.ts_ns += 700_000_000_000;
            host.settle();
            let report = host.pipeline.report(&host.processes);
            let left: Vec<_> = report
                .tables()
                .filter(|(_, name, value)| *value > 0 && !NOT_PER_PROCESS.contains(name))
                .collect();
            proptest::prop_assert!(left.is_empty(), "state left after every process exited: {:?}", left);
            // Every span the assembly ended went somewhere.
            let spans = report.get("assemble", "spans").unwrap_or(0);
            proptest::prop_assert!(spans >= report.get("assemble", "incomplete_spans").unwrap_or(0));
        }
    }
}
