//! The per-record and per-span path, the same for the daemon and the replay benchmark: a
//! decoded record goes through assembly and events; finished spans wait for their device's
//! facts, are routed by the configuration and converted to export records.
//!
//! What needs the kernel or the network stays outside: the run loop adopts processes, attaches
//! uprobes and runs the database queries the pipeline asks for ([`Pipeline::take_queries`]).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tracer_export::{Destination, SpanRecord};

use crate::{
    assemble::{
        AssembledSpan, Assembler, Observation,
        naming::{DATABASE_KEY, OperationClass},
    },
    configure::{Configuration, Policy, Routing},
    convert::{
        resources::{self, ResourceKey, Resources},
        spandata::{self, ClockOffset},
    },
    devices::{DeviceFacts, DeviceRegistry, dbclient},
    discover::{processes::Processes, procinfo::ProcessInfo},
    events::Events,
    probe::record::{Direction, Record},
    stats::StageStats,
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
    pub destinations: Vec<Destination>,
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
}

/// Assembly, events, devices, configuration and conversion, in that order.
pub struct Pipeline {
    assembler: Assembler,
    events: Events,
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
    released_by: HashMap<(u32, Option<String>), u64>,
}

impl Pipeline {
    /// `capture_bytes` is the probes' capture length; `policy` the operator's configuration.
    pub fn new(capture_bytes: usize, policy: Policy) -> Self {
        Pipeline {
            assembler: Assembler::new(capture_bytes),
            events: Events::default(),
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
        }
    }

    /// A process became a target: its configuration sources, and what its command line says.
    pub fn adopt(&mut self, info: &ProcessInfo) {
        if let Some(facts) = database_server_facts(info) {
            self.devices.learn(DATABASE_KEY.to_vec(), facts);
        }
        self.config.add_process(info);
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
            Record::Close { fd, .. } => {
                self.assembler.push(record);
                self.events.on_close(pid, *fd);
            }
            Record::Exit { .. } | Record::Exec { .. } => {
                self.assembler.push(record);
                self.events.on_exit(pid);
                // Route what the process left under its own configuration, then drop it.
                let mut ready = std::mem::take(&mut self.ready);
                self.release(processes, false, &mut ready);
                self.ready = ready;
                processes.mark_exited(pid);
                self.config.remove_process(pid);
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
        out.append(&mut self.ready);
        for observation in self.assembler.drain_observations() {
            self.on_observation(observation, processes);
        }
        let now = Instant::now();
        self.assembler.drain_into(&mut self.finished);
        for mut span in std::mem::take(&mut self.finished) {
            span.device_key = span.device_key.map(|key| self.devices.served_key(span.pid, key));
            if span.operation == OperationClass::Internal {
                continue;
            }
            if self.waiting.len() >= MAX_WAITING
                && let Some((_, oldest)) = self.waiting.pop_front()
            {
                self.stats.waiting_overflow += 1;
                self.route(oldest, processes, out);
            }
            self.waiting.push_back((now, span));
        }
        let mut unknown_hosts = Vec::new();
        for (since, span) in &self.waiting {
            let opaque_unknown = span
                .device_key
                .as_deref()
                .is_some_and(|k| self.devices.name(k).is_none() && since.elapsed() >= IMPORT_AFTER);
            if opaque_unknown && let Some(host) = processes.info(span.pid).and_then(|p| p.tango_host()) {
                unknown_hosts.push(host);
            }
        }
        for tango_host in unknown_hosts {
            self.import(tango_host);
        }
        for (since, span) in std::mem::take(&mut self.waiting) {
            let known = span.device_key.as_deref().is_none_or(|key| self.devices.is_known(key));
            if known || force || since.elapsed() >= DEVICE_FACTS_WAIT {
                self.route(span, processes, out);
            } else {
                self.waiting.push_back((since, span));
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

    /// Timer work: forgets links too old to matter, ends calls that waited too long.
    pub fn expire(&mut self, now_ns: u64) {
        self.assembler.expire(now_ns);
        self.events.expire(now_ns);
    }

    /// A process is gone for good (some time after its exit): every stage frees its state.
    pub fn forget_process(&mut self, pid: u32) {
        self.released_by.retain(|(p, _), _| *p != pid);
        self.devices.forget_process(pid);
        self.resources.forget(pid);
    }

    /// Ends every call still open (shutdown).
    pub fn flush_all(&mut self, now_ns: u64) {
        self.assembler.flush_all(now_ns);
    }

    /// Spans released so far for `pid`'s `device` (`None`: the process's own spans).
    pub fn released(&self, pid: u32, device: Option<&str>) -> u64 {
        self.released_by.get(&(pid, device.map(str::to_string))).copied().unwrap_or(0)
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

    /// Every stage's counters and table sizes, in pipeline order.
    pub fn report(&self, processes: &Processes) -> StageStats {
        let mut out = StageStats::default();
        processes.report(&mut out);
        self.assembler.report(&mut out);
        self.events.report(&mut out);
        self.devices.report(&mut out);
        self.config.stats(&mut out);
        self.resources.report(&mut out);
        const STAGE: &str = "pipeline";
        out.push(STAGE, "released", self.stats.released);
        out.push(STAGE, "not_wanted", self.stats.not_wanted);
        out.push(STAGE, "native", self.stats.native);
        out.push(STAGE, "waiting_overflow", self.stats.waiting_overflow);
        out.size(STAGE, "waiting_span_entries", self.waiting.len());
        out.size(STAGE, "released_count_entries", self.released_by.len());
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
            Observation::Exported { pid, device } => {
                if let Some(tango_host) = processes.info(pid).and_then(|p| p.tango_host()) {
                    self.queries.push(DbQuery::Properties { tango_host, device });
                }
            }
        }
    }

    /// Where a span goes, by the configuration of its device (or process), and its export form.
    fn route(&mut self, span: AssembledSpan, processes: &Processes, out: &mut Vec<Routed>) {
        let device = span.device_key.as_deref().and_then(|k| self.devices.name(k));
        match self.config.route(span.pid, device.as_deref(), span.operation) {
            Routing::Export(destinations) if !destinations.is_empty() => {
                self.stats.released += 1;
                *self.released_by.entry((span.pid, device.clone())).or_default() += 1;
                let record = self.span_record(span, device, processes);
                out.push(Routed { record, destinations });
            }
            Routing::Native => self.stats.native += 1,
            Routing::Export(_) | Routing::Drop => self.stats.not_wanted += 1,
        }
    }

    fn span_record(
        &mut self,
        span: AssembledSpan,
        device_name: Option<String>,
        processes: &Processes,
    ) -> SpanRecord {
        let process = processes.info(span.pid);
        let is_server = self.assembler.is_server(span.pid);
        let key = match &span.device_key {
            Some(object_key) => ResourceKey::Device { pid: span.pid, object_key: object_key.clone() },
            None => ResourceKey::Process { pid: span.pid },
        };
        let facts = span.device_key.as_deref().and_then(|k| self.devices.facts(k));
        let resource = self.resources.resolve(&key, process, is_server, device_name.as_deref(), facts);
        let scope = resources::scope_for(process);
        let target =
            span.target_key.as_deref().map(|t| self.devices.name(t).unwrap_or_else(|| hex::encode(t)));
        let data = spandata::to_span_data(span, target, scope, &self.clock);
        SpanRecord { resource, data }
    }

    /// Whether a server-side connection's client is one of the daemon's database connections.
    fn is_own_connection(&self, location: &str) -> bool {
        let Some(port) = location.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()) else {
            return false;
        };
        location.starts_with("giop:tcp:") && self.own_ports.lock().is_ok_and(|ports| ports.contains(&port))
    }
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

fn is_giop_request(bytes: &[u8]) -> bool {
    bytes.get(..4) == Some(b"GIOP") && bytes.get(7) == Some(&0)
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

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../tracer-wire/tests/fixtures/giop/{name}.bin", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// GIOP 1.0 messages with an empty service-context list keep their request id at offset 16.
    fn with_request_id(mut bytes: Vec<u8>, id: u32) -> Vec<u8> {
        bytes.splice(16..20, id.to_le_bytes());
        bytes
    }

    fn data(pid: u32, fd: i32, ts_ns: u64, direction: Direction, bytes: &[u8]) -> Record {
        Record::Data {
            pid,
            tid: pid,
            fd,
            ts_ns,
            direction,
            total_len: bytes.len() as u32,
            bytes: bytes.to_vec(),
            peer: Default::default(),
        }
    }

    struct Host {
        pipeline: Pipeline,
        processes: Processes,
        routed: Vec<Routed>,
        ts_ns: u64,
    }

    impl Host {
        fn new() -> Self {
            let policy = Policy {
                trace_by_default: true,
                destinations: vec![Destination::Store { path: "test".into() }],
                extended_operations: false,
            };
            Host {
                pipeline: Pipeline::new(2048, policy),
                processes: Processes::new(None),
                routed: Vec::new(),
                ts_ns: 1_000,
            }
        }

        fn start(&mut self, pid: u32) {
            let info = ProcessInfo { pid, comm: "test".into(), ..Default::default() };
            self.pipeline.adopt(&info);
            assert!(self.processes.insert(info));
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
}
